//! Export: one CSEntryChange at a time, as LDAP add, modify, modify DN and delete. Entries are
//! found by their anchor, so a rename never loses track of them; modifies use the permissive
//! modify control where offered, so that adding a value already there or deleting one already
//! gone (a resent change whose first outcome was unknown) succeeds without rewriting anything.

use std::collections::HashSet;

use ecma_proto::v1::{
    self, AttributeModificationType as AMT, CsEntryChange, ErrorKind, ObjectModificationType as OMT,
    value::Kind,
};
use ldap3::controls::{PostRead, PostReadResp, RawControl};
use ldap3::{Mod, SearchEntry};

use crate::directory::{OpError, check, client_error};
use crate::dn::{default_dn, dn_eq, rdn_eq, split_dn, unescape_dn_value};
use crate::target::{PERMISSIVE_MODIFY_OID, POST_READ_OID, Target};

/// What a successful change leaves: the object's anchor and DN.
#[derive(Debug, Default)]
pub struct Applied {
    pub anchor: Option<String>,
    pub dn: String,
}

type Values = HashSet<Vec<u8>>;

/// Applies one change under `partition`.
pub async fn apply(target: &Target, partition: &str, change: &CsEntryChange) -> Result<Applied, OpError> {
    use tracing::Instrument;
    let operation = match OMT::try_from(change.modification_type).unwrap_or(OMT::Unspecified) {
        OMT::Add => "add",
        OMT::Update | OMT::Replace => "modify",
        OMT::Delete => "delete",
        _ => "none",
    };
    // The directory operation's span: database client conventions (`db.system.name` "ldap"),
    // with the LDAP result code of a failure. No DN or value: traces leave the house.
    let span = tracing::info_span!(
        "ldap",
        otel.name = %format!("ldap {operation}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "ldap",
        db.operation.name = operation,
        db.namespace = %partition,
        db.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let result = apply_unobserved(target, partition, change).instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", format!("{:?}", e.kind));
        if let Some(rc) = e.rc {
            span.record("db.response.status_code", rc);
        }
    }
    result
}

async fn apply_unobserved(
    target: &Target,
    partition: &str,
    change: &CsEntryChange,
) -> Result<Applied, OpError> {
    target.check_type(&change.object_type)?;
    match OMT::try_from(change.modification_type).unwrap_or(OMT::Unspecified) {
        OMT::Add => add(target, partition, change).await,
        OMT::Update | OMT::Replace => update(target, partition, change).await,
        OMT::Delete => delete(target, partition, change).await,
        OMT::None => Ok(Applied { anchor: anchor_text(change), dn: change.dn.clone() }),
        OMT::Unspecified => {
            Err(OpError::new(ErrorKind::InvalidAttributeValue, "the change has no modification type"))
        }
    }
}

fn anchor_text(change: &CsEntryChange) -> Option<String> {
    change.anchors.first().and_then(|a| a.value.as_ref()).and_then(v1::Value::as_text)
}

/// The bytes of a value; a reference that is not a DN is an anchor, resolved to its DN.
async fn value_bytes(target: &Target, partition: &str, value: &v1::Value) -> Result<Vec<u8>, OpError> {
    Ok(match &value.kind {
        Some(Kind::StringValue(s)) => s.as_bytes().to_vec(),
        Some(Kind::IntegerValue(i)) => i.to_string().into_bytes(),
        Some(Kind::BooleanValue(b)) => {
            if *b {
                b"TRUE".to_vec()
            } else {
                b"FALSE".to_vec()
            }
        }
        Some(Kind::BinaryValue(b)) => b.clone(),
        Some(Kind::ReferenceValue(r)) if r.contains('=') => r.as_bytes().to_vec(),
        Some(Kind::ReferenceValue(anchor)) => target
            .dn_of_anchor(partition, anchor)
            .await?
            .ok_or_else(|| {
                OpError::new(
                    ErrorKind::NoSuchObject,
                    format!("no entry has the anchor {anchor:?} (a reference)"),
                )
            })?
            .into_bytes(),
        None => return Err(OpError::new(ErrorKind::InvalidAttributeValue, "a value without content")),
    })
}

async fn value_set(target: &Target, partition: &str, values: &[v1::Value]) -> Result<Values, OpError> {
    let mut set = Values::new();
    for v in values {
        set.insert(value_bytes(target, partition, v).await?);
    }
    Ok(set)
}

/// Whether `name` is the group's member attribute (whose emptiness needs a placeholder).
fn is_member_attribute(target: &Target, name: &str) -> bool {
    member_attribute(target).is_some_and(|m| m.eq_ignore_ascii_case(name))
}

/// The member attribute of the configured group class.
fn member_attribute(target: &Target) -> Option<&'static str> {
    match target.settings().group_style()? {
        crate::settings::GroupStyle::GroupOfNames => Some("member"),
        crate::settings::GroupStyle::GroupOfUniqueNames => Some("uniqueMember"),
    }
}

async fn add(target: &Target, partition: &str, change: &CsEntryChange) -> Result<Applied, OpError> {
    let s = target.settings();
    let mut attrs: Vec<(Vec<u8>, Values)> =
        vec![(b"objectClass".to_vec(), s.classes().into_iter().map(String::into_bytes).collect())];
    for c in &change.attribute_changes {
        if c.name.eq_ignore_ascii_case(&s.anchor) || c.name.eq_ignore_ascii_case("objectClass") {
            continue;
        }
        let values = value_set(target, partition, &c.value_adds).await?;
        if !values.is_empty() {
            attrs.push((c.name.clone().into_bytes(), values));
        }
    }
    let dn = if change.dn.is_empty() {
        let rdn_value = attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s.rdn_attribute.as_bytes()))
            .and_then(|(_, v)| v.iter().next())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or_else(|| {
                OpError::new(
                    ErrorKind::InvalidDn,
                    format!(
                        "the new entry has no dn and no {} to name it by (map a dn, or the rdn_attribute)",
                        s.rdn_attribute
                    ),
                )
            })?;
        default_dn(&s.rdn_attribute, &rdn_value, &target.search_base(partition))
    } else {
        change.dn.clone()
    };
    check_in_partition(&dn, partition)?;
    // The naming attribute's value must be in the entry itself.
    let rdn = split_dn(&dn).into_iter().next().unwrap_or_default();
    if let Some((name, value)) = rdn.split_once('=') {
        let value = unescape_dn_value(value).into_bytes();
        match attrs.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name.trim().as_bytes())) {
            Some((_, values)) => {
                values.insert(value);
            }
            None => attrs.push((name.trim().as_bytes().to_vec(), [value].into_iter().collect())),
        }
    }
    if let Some(member) = member_attribute(target)
        && !attrs.iter().any(|(n, _)| n.eq_ignore_ascii_case(member.as_bytes()))
    {
        attrs.push((member.as_bytes().to_vec(), [target.empty_member().into_bytes()].into_iter().collect()));
    }
    let mut result = add_once(target, &dn, &attrs).await;
    if let Err(e) = &result
        && e.rc == Some(32)
        && s.create_containers
    {
        create_parents(target, &dn, partition).await?;
        result = add_once(target, &dn, &attrs).await;
    }
    if let Err(e) = &mut result
        && e.rc == Some(32)
        && !s.create_containers
    {
        e.detail.push_str("; its parent entry does not exist: create it, or set create_containers = true");
    }
    let anchor = match result? {
        Some(anchor) => Some(anchor),
        None => {
            let entry = target.dir.read_entry(&dn, &[&s.anchor]).await?;
            entry.as_ref().and_then(|e| target.anchor_of(e))
        }
    };
    Ok(Applied { anchor, dn })
}

/// One ADD; returns the anchor when the post-read control gave it.
async fn add_once(target: &Target, dn: &str, attrs: &[(Vec<u8>, Values)]) -> Result<Option<String>, OpError> {
    let anchor = target.settings().anchor.clone();
    let post_read = target.features.post_read;
    let attrs = attrs.to_vec();
    target
        .dir
        .write(|mut ldap| async move {
            if post_read {
                ldap.with_controls(PostRead::new(vec![anchor.as_str()]));
            }
            let result = check(&format!("adding {dn:?}"), ldap.add(dn, attrs).await)?;
            // ldap3's parser panics on a malformed control: then the anchor is read instead.
            let read = result
                .ctrls
                .iter()
                .find(|c| c.1.ctype == POST_READ_OID && c.1.val.is_some())
                .and_then(|c| std::panic::catch_unwind(|| c.1.parse::<PostReadResp>()).ok());
            Ok(read.and_then(|r| {
                let entry = SearchEntry { dn: dn.to_string(), attrs: r.attrs, bin_attrs: r.bin_attrs };
                target.anchor_of(&entry)
            }))
        })
        .await
}

/// Creates the missing parents of `dn` below the partition, top down.
async fn create_parents(target: &Target, dn: &str, partition: &str) -> Result<(), OpError> {
    let parts = split_dn(dn);
    let depth = split_dn(partition).len();
    let mut missing = Vec::new();
    for i in 1..parts.len().saturating_sub(depth) + 1 {
        let parent = parts[i..].join(",");
        if dn_eq(&parent, partition) || target.dir.read_entry(&parent, &["1.1"]).await?.is_some() {
            break;
        }
        missing.push(parent);
    }
    for parent in missing.into_iter().rev() {
        let rdn = split_dn(&parent).into_iter().next().unwrap_or_default();
        let (name, value) = rdn.split_once('=').unwrap_or(("", ""));
        let value = unescape_dn_value(value);
        let classes: &[&str] = match name.trim().to_ascii_lowercase().as_str() {
            "ou" => &["organizationalUnit"],
            "dc" => &["domain"],
            "o" => &["organization"],
            "l" => &["locality"],
            "cn" => &["organizationalRole"],
            other => {
                return Err(OpError::new(
                    ErrorKind::InvalidDn,
                    format!(
                        "cannot create the container {parent:?}: no container class for {other:?} (use ou=, o=, dc=, l= or cn=)"
                    ),
                ));
            }
        };
        let attrs: Vec<(Vec<u8>, Values)> = vec![
            (b"objectClass".to_vec(), classes.iter().map(|c| c.as_bytes().to_vec()).collect()),
            (name.trim().as_bytes().to_vec(), [value.into_bytes()].into_iter().collect()),
        ];
        match target
            .dir
            .write(|mut ldap| async move {
                check(&format!("creating the container {parent:?}"), ldap.add(&parent, attrs).await)
            })
            .await
        {
            Ok(_) => tracing::info!("created a missing container"),
            Err(e) if e.rc == Some(68) => {} // created meanwhile
            Err(mut e) if e.rc == Some(32) => {
                // Containers are created below the partition only: its own entry is missing.
                e.detail.push_str(&format!(
                    "; the partition's entry {partition:?} does not exist in the directory: add it first, or check the connector's partition"
                ));
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The entry's current DN: found by its anchor, else the DN the change names.
async fn current_dn(target: &Target, partition: &str, change: &CsEntryChange) -> Result<String, OpError> {
    match anchor_text(change) {
        Some(anchor) => target.dn_of_anchor(partition, &anchor).await?.ok_or_else(|| {
            OpError::new(ErrorKind::NoSuchObject, format!("no entry has the anchor {anchor:?}"))
        }),
        None if !change.dn.is_empty() => {
            check_in_partition(&change.dn, partition)?;
            Ok(change.dn.clone())
        }
        None => Err(OpError::new(ErrorKind::NoSuchObject, "the change names neither an anchor nor a dn")),
    }
}

async fn update(target: &Target, partition: &str, change: &CsEntryChange) -> Result<Applied, OpError> {
    let s = target.settings();
    let mut dn = current_dn(target, partition, change).await?;
    if !change.dn.is_empty() && !dn_eq(&dn, &change.dn) {
        check_in_partition(&change.dn, partition)?;
        rename(target, partition, &dn, &change.dn).await?;
        dn = change.dn.clone();
    } else if let Some(new_dn) = renamed_by_naming_value(&dn, change) {
        // No DN from the mapping, but the naming attribute changes: the entry is renamed.
        rename(target, partition, &dn, &new_dn).await?;
        dn = new_dn;
    }
    let mut mods: Vec<Mod<Vec<u8>>> = Vec::new();
    let mut member_deletes = false;
    for c in &change.attribute_changes {
        if c.name.eq_ignore_ascii_case(&s.anchor) || c.name.eq_ignore_ascii_case("objectClass") {
            continue;
        }
        let name = c.name.clone().into_bytes();
        let adds = value_set(target, partition, &c.value_adds).await?;
        let member = is_member_attribute(target, &c.name);
        match AMT::try_from(c.modification_type).unwrap_or(AMT::Unspecified) {
            AMT::Add | AMT::Replace => {
                if member && adds.is_empty() {
                    mods.push(Mod::Replace(name, [target.empty_member().into_bytes()].into_iter().collect()));
                } else {
                    mods.push(Mod::Replace(name, adds));
                }
            }
            AMT::Delete => {
                if member {
                    mods.push(Mod::Replace(name, [target.empty_member().into_bytes()].into_iter().collect()));
                } else {
                    mods.push(Mod::Replace(name, Values::new()));
                }
            }
            AMT::Update => {
                let deletes = value_set(target, partition, &c.value_deletes).await?;
                if !adds.is_empty() {
                    // The placeholder goes as soon as there is a real member.
                    if member && has_value(target, &dn, &c.name, &target.empty_member()).await? {
                        mods.push(Mod::Delete(
                            name.clone(),
                            [target.empty_member().into_bytes()].into_iter().collect(),
                        ));
                    }
                    mods.push(Mod::Add(name.clone(), adds));
                }
                if !deletes.is_empty() {
                    member_deletes |= member;
                    mods.push(Mod::Delete(name, deletes));
                }
            }
            AMT::Unspecified => {
                return Err(OpError::new(
                    ErrorKind::InvalidAttributeValue,
                    format!("{}: no modification type", c.name),
                ));
            }
        }
    }
    if mods.is_empty() {
        return Ok(Applied { anchor: anchor_text(change), dn });
    }
    let mut outcome = modify(target, &dn, mods.clone()).await;
    if let Err(e) = &outcome
        && matches!(e.rc, Some(16 | 20))
    {
        // A value to add is there already, or one to delete is gone (a resent change whose
        // first outcome was unknown, or a rename that already swapped the naming value): only
        // what is still needed is sent.
        mods = still_needed(target, &dn, mods).await?;
        outcome = if mods.is_empty() { Ok(()) } else { modify(target, &dn, mods.clone()).await };
    }
    match outcome {
        // The last member went: groupOfNames needs one, so the placeholder takes its place.
        Err(e) if e.rc == Some(65) && member_deletes => {
            let member = member_attribute(target).unwrap_or("member").as_bytes().to_vec();
            mods.insert(0, Mod::Add(member, [target.empty_member().into_bytes()].into_iter().collect()));
            modify(target, &dn, mods).await?;
        }
        other => {
            other?;
        }
    }
    Ok(Applied { anchor: anchor_text(change), dn })
}

/// Whether the entry's `attribute` holds `value` (a compare, cheaper than reading a long list).
async fn has_value(target: &Target, dn: &str, attribute: &str, value: &str) -> Result<bool, OpError> {
    target
        .dir
        .read(|mut ldap| async move {
            match ldap.compare(dn, attribute, value).await {
                Ok(r) => match r.0.rc {
                    5 | 16 => Ok(false), // compareFalse, noSuchAttribute
                    6 => Ok(true),
                    _ => {
                        Err(crate::directory::result_error(&format!("comparing {attribute} of {dn:?}"), &r.0))
                    }
                },
                Err(e) => Err(client_error(&format!("comparing {attribute} of {dn:?}"), &e)),
            }
        })
        .await
}

/// `mods` without the values already added or already deleted, from the entry as it is.
async fn still_needed(
    target: &Target,
    dn: &str,
    mods: Vec<Mod<Vec<u8>>>,
) -> Result<Vec<Mod<Vec<u8>>>, OpError> {
    let names: Vec<String> = mods
        .iter()
        .filter_map(|m| match m {
            Mod::Add(n, _) | Mod::Delete(n, _) => Some(String::from_utf8_lossy(n).into_owned()),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let Some(entry) = target.dir.read_entry(dn, &names).await? else {
        return Err(OpError::new(ErrorKind::NoSuchObject, format!("{dn:?} is gone")));
    };
    let current = |name: &[u8]| -> Vec<Vec<u8>> {
        let name = String::from_utf8_lossy(name);
        let text = entry
            .attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&name))
            .flat_map(|(_, v)| v.iter().map(|s| s.as_bytes().to_vec()));
        let binary = entry
            .bin_attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&name))
            .flat_map(|(_, v)| v.iter().cloned());
        text.chain(binary).collect()
    };
    // Values compare as the directory would for names and DNs: without case.
    let same = |a: &[u8], b: &[u8]| {
        a.eq_ignore_ascii_case(b) || dn_eq(&String::from_utf8_lossy(a), &String::from_utf8_lossy(b))
    };
    let mut out = Vec::new();
    for m in mods {
        match m {
            Mod::Add(name, values) => {
                let have = current(&name);
                let values: Values =
                    values.into_iter().filter(|v| !have.iter().any(|h| same(h, v))).collect();
                if !values.is_empty() {
                    out.push(Mod::Add(name, values));
                }
            }
            Mod::Delete(name, values) if !values.is_empty() => {
                let have = current(&name);
                let values: Values = values.into_iter().filter(|v| have.iter().any(|h| same(h, v))).collect();
                if !values.is_empty() {
                    out.push(Mod::Delete(name, values));
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The new DN when a change replaces the value of the entry's naming attribute.
fn renamed_by_naming_value(dn: &str, change: &CsEntryChange) -> Option<String> {
    let parts = split_dn(dn);
    let (name, value) = parts.first()?.split_once('=')?;
    let (name, value) = (name.trim(), unescape_dn_value(value));
    let c = change.attribute_changes.iter().find(|c| c.name.eq_ignore_ascii_case(name))?;
    if !matches!(AMT::try_from(c.modification_type), Ok(AMT::Replace | AMT::Add)) {
        return None;
    }
    let new_values: Vec<String> = c.value_adds.iter().filter_map(v1::Value::as_text).collect();
    if new_values.is_empty() || new_values.iter().any(|v| v.eq_ignore_ascii_case(&value)) {
        return None;
    }
    let parent = parts[1..].join(",");
    Some(format!("{name}={},{parent}", ldap3::dn_escape(new_values[0].as_str())))
}

async fn modify(target: &Target, dn: &str, mods: Vec<Mod<Vec<u8>>>) -> Result<(), OpError> {
    let permissive = target.features.permissive_modify;
    target
        .dir
        .write(|mut ldap| async move {
            if permissive {
                ldap.with_controls(RawControl {
                    ctype: PERMISSIVE_MODIFY_OID.into(),
                    crit: false,
                    val: None,
                });
            }
            check(&format!("modifying {dn:?}"), ldap.modify(dn, mods).await).map(|_| ())
        })
        .await
}

/// Renames `from` to `to`, moving it when the parent changes.
async fn rename(target: &Target, partition: &str, from: &str, to: &str) -> Result<(), OpError> {
    let new_parts = split_dn(to);
    let old_parts = split_dn(from);
    let (Some(new_rdn), Some(_)) = (new_parts.first(), old_parts.first()) else {
        return Err(OpError::new(ErrorKind::InvalidDn, format!("{to:?} is not a DN")));
    };
    let new_parent = new_parts[1..].join(",");
    let old_parent = old_parts[1..].join(",");
    let new_sup = (!dn_eq(&new_parent, &old_parent)).then_some(new_parent.clone());
    if new_sup.is_some() && target.settings().create_containers {
        create_parents(target, to, partition).await?;
    }
    let rdn = new_rdn.clone();
    target
        .dir
        .write(|mut ldap| async move {
            check(
                &format!("renaming {from:?} to {to:?}"),
                ldap.modifydn(from, &rdn, true, new_sup.as_deref()).await,
            )
            .map(|_| ())
        })
        .await?;
    if target.settings().update_references {
        update_references(target, partition, from, to).await?;
    }
    Ok(())
}

/// After a rename, the groups of the partition that name the old DN name the new one (what
/// OpenLDAP's refint overlay does, for directories without it; harmless with it).
async fn update_references(target: &Target, partition: &str, from: &str, to: &str) -> Result<(), OpError> {
    let old = ldap3::ldap_escape(from);
    let filter = format!("(|(member={old})(uniqueMember={old}))");
    let groups =
        target.dir.search(partition, ldap3::Scope::Subtree, &filter, &["member", "uniqueMember"]).await?;
    for group in groups {
        let mut mods: Vec<Mod<Vec<u8>>> = Vec::new();
        for (name, values) in &group.attrs {
            for value in values.iter().filter(|v| dn_eq(v, from)) {
                mods.push(Mod::Delete(
                    name.clone().into_bytes(),
                    [value.clone().into_bytes()].into_iter().collect(),
                ));
                mods.push(Mod::Add(
                    name.clone().into_bytes(),
                    [to.as_bytes().to_vec()].into_iter().collect(),
                ));
            }
        }
        if mods.is_empty() {
            continue;
        }
        match modify(target, &group.dn, mods.clone()).await {
            // The directory did it itself meanwhile (refint), or the new DN was there already.
            Err(e) if matches!(e.rc, Some(16 | 20)) => {
                let mods = still_needed(target, &group.dn, mods).await?;
                if !mods.is_empty() {
                    modify(target, &group.dn, mods).await?;
                }
            }
            other => other?,
        }
    }
    Ok(())
}

async fn delete(target: &Target, partition: &str, change: &CsEntryChange) -> Result<Applied, OpError> {
    let dn = current_dn(target, partition, change).await?;
    let what = format!("deleting {dn:?}");
    target.dir.write(|mut ldap| async move { check(&what, ldap.delete(&dn).await).map(|_| ()) }).await?;
    Ok(Applied { anchor: anchor_text(change), dn: String::new() })
}

/// Sets a password: the Password Modify extended operation where offered (the server hashes it
/// by its own policy), else a replace of `userPassword`.
pub async fn set_password(
    target: &Target,
    partition: &str,
    anchor: Option<String>,
    dn: &str,
    password: &str,
) -> Result<(), OpError> {
    let dn = match anchor {
        Some(anchor) => target.dn_of_anchor(partition, &anchor).await?.ok_or_else(|| {
            OpError::new(ErrorKind::NoSuchObject, format!("no entry has the anchor {anchor:?}"))
        })?,
        None if !dn.is_empty() => {
            check_in_partition(dn, partition)?;
            dn.to_string()
        }
        None => {
            return Err(OpError::new(
                ErrorKind::NoSuchObject,
                "the request names neither an anchor nor a dn",
            ));
        }
    };
    let exop = target.features.password_modify;
    target
        .dir
        .write(|mut ldap| async move {
            if exop {
                let op = ldap3::exop::PasswordModify {
                    user_id: Some(&dn),
                    old_pass: None,
                    new_pass: Some(password),
                };
                match ldap.extended(op).await {
                    Ok(r) if r.1.rc == 0 => Ok(()),
                    Ok(r) => {
                        Err(crate::directory::result_error(&format!("setting the password of {dn:?}"), &r.1))
                    }
                    Err(e) => Err(client_error(&format!("setting the password of {dn:?}"), &e)),
                }
            } else {
                let mods = vec![Mod::Replace(
                    b"userPassword".to_vec(),
                    [password.as_bytes().to_vec()].into_iter().collect(),
                )];
                check(&format!("setting the password of {dn:?}"), ldap.modify(&dn, mods).await).map(|_| ())
            }
        })
        .await
}

/// Refuses a DN outside the partition.
fn check_in_partition(dn: &str, partition: &str) -> Result<(), OpError> {
    let parts = split_dn(dn);
    let base = split_dn(partition);
    let inside = parts.len() > base.len()
        && parts[parts.len() - base.len()..].iter().zip(&base).all(|(a, b)| rdn_eq(a, b));
    if inside {
        Ok(())
    } else {
        Err(OpError::new(ErrorKind::InvalidDn, format!("{dn:?} is not inside the partition {partition:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_outside_the_partition_are_refused() {
        assert!(check_in_partition("uid=a,ou=People,dc=example,dc=com", "dc=example,dc=com").is_ok());
        assert!(check_in_partition("uid=a,dc=other,dc=com", "dc=example,dc=com").is_err());
        assert!(check_in_partition("dc=example,dc=com", "dc=example,dc=com").is_err());
        // An escaped comma does not make a value look like a component of the partition.
        assert!(check_in_partition(r"uid=x\,dc=example\,dc=com,dc=evil", "dc=example,dc=com").is_err());
    }
}
