//! A TCP proxy in front of an LDAP server that can lose an answer: armed, it forwards the next
//! LDAP AddRequest to the server, drops whatever the server sends back, and closes both
//! connections. The add is applied, and the client never learns it: the "outcome unknown" case
//! of a connection that breaks after a write was sent. Plain LDAP only (it reads the BER of the
//! requests).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A running proxy; it serves until the process ends.
pub struct CutProxy {
    addr: SocketAddr,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, c) = (armed.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                relay(client, server, a.clone(), c.clone());
            }
        });
        Self { addr, armed, cuts }
    }

    /// `ldap://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    /// Makes the next AddRequest lose its answer (once).
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many answers were lost so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// Relays one connection both ways, on two threads.
fn relay(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>, cuts: Arc<AtomicUsize>) {
    let hold = Arc::new(AtomicBool::new(false));
    let (mut c_in, mut s_out) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let (mut s_in, mut c_out) = (server, client);
    let h = hold.clone();
    // Server to client. The answer to a held add (so: the add is applied) is dropped, and both
    // connections close.
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = s_in.read(&mut buf) {
            if n == 0 || h.load(Ordering::SeqCst) || c_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_out.shutdown(Shutdown::Both);
        let _ = s_in.shutdown(Shutdown::Both);
    });
    // Client to server, cutting after an AddRequest when armed.
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = c_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            let cut = is_add_request(&buf[..n])
                && armed.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok();
            if cut {
                hold.store(true, Ordering::SeqCst);
                cuts.fetch_add(1, Ordering::SeqCst);
            }
            if s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Both);
    });
}

/// Whether `bytes` start with an LDAPMessage whose protocolOp is an AddRequest
/// (`SEQUENCE { messageID INTEGER, [APPLICATION 8] ... }`).
fn is_add_request(bytes: &[u8]) -> bool {
    fn skip_length(bytes: &[u8], at: usize) -> Option<usize> {
        let first = *bytes.get(at)?;
        if first < 0x80 { Some(at + 1) } else { Some(at + 1 + (first & 0x7f) as usize) }
    }
    let check = || -> Option<bool> {
        if *bytes.first()? != 0x30 {
            return Some(false);
        }
        let at = skip_length(bytes, 1)?;
        if *bytes.get(at)? != 0x02 {
            return Some(false);
        }
        let id_len = *bytes.get(at + 1)? as usize;
        Some(*bytes.get(at + 2 + id_len)? == 0x68)
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::is_add_request;

    #[test]
    fn add_requests_are_recognised() {
        // messageID 5, AddRequest (0x68) with a short body.
        assert!(is_add_request(&[0x30, 0x0a, 0x02, 0x01, 0x05, 0x68, 0x05, 0x04, 0x00, 0x30, 0x00]));
        // Long-form length, messageID of two bytes.
        assert!(is_add_request(&[0x30, 0x81, 0x90, 0x02, 0x02, 0x01, 0x00, 0x68, 0x00]));
        // A SearchRequest (0x63) is not.
        assert!(!is_add_request(&[0x30, 0x0a, 0x02, 0x01, 0x05, 0x63, 0x05]));
        assert!(!is_add_request(&[0x30]));
        assert!(!is_add_request(&[]));
    }
}
