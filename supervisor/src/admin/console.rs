//! The console (placeholder while the pages are written).
use std::sync::Arc;

use axum::Router;

use super::AdminState;

pub fn router() -> Router<Arc<AdminState>> {
    Router::new()
}
