//! The inbox: listing contributor drops and parsing their keys.
//!
//! A drop lives at `inbox/<datanet>/<0xaddress>/<file>`. Signature companions (`<file>.sig`) are
//! not contributions; they are read alongside the file they sign.

use futures::StreamExt;
use object_store::ObjectMeta;
use object_store::path::Path;

use crate::error::Result;
use crate::ids::parse_address;
use crate::reason::ReasonCode;
use crate::storage::{Warehouse, prefix};

/// Suffix of signature companion files.
pub const SIG_SUFFIX: &str = ".sig";

/// One object found in the inbox.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    /// Key relative to the warehouse root, e.g. `inbox/med/0xab…/part-1.parquet`.
    pub path: String,
    /// Size in bytes, from the listing.
    pub size: u64,
    /// ETag from the listing, if the store gives one.
    pub etag: Option<String>,
}

/// A key that passed the path rules: which datanet and contributor it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxPath {
    /// The datanet folder.
    pub datanet: String,
    /// The contributor address, lower case.
    pub contributor: String,
    /// The file name.
    pub file_name: String,
}

/// List every object under `inbox/` (or `inbox/<datanet>/`), sorted by key, without `.sig` files.
pub async fn list(warehouse: &Warehouse, datanet: Option<&str>) -> Result<(Vec<InboxEntry>, Vec<String>)> {
    let root = match datanet {
        Some(d) => Path::from(format!("{}/{d}", prefix::INBOX)),
        None => Path::from(prefix::INBOX),
    };
    let mut stream = warehouse.store().list(Some(&root));
    let mut entries = Vec::new();
    let mut unreadable = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(ObjectMeta { location, size, e_tag, .. }) => {
                let path = location.to_string();
                if path.ends_with(SIG_SUFFIX) {
                    continue;
                }
                entries.push(InboxEntry { path, size, etag: e_tag });
            }
            // A name the store cannot even represent (e.g. not UTF-8 on a local disk): there is no
            // key to log it under, so it is reported in the summary instead.
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((entries, unreadable))
}

/// Apply the path rules to a key. Errors carry the reason code and a detail.
pub fn parse_path(key: &str) -> std::result::Result<InboxPath, (ReasonCode, String)> {
    let segments: Vec<&str> = key.split('/').collect();
    for seg in &segments {
        let decoded = percent_decode(seg);
        if seg.is_empty() || decoded.contains("..") || decoded.chars().any(|c| c.is_control() || c == '\\') {
            return Err((ReasonCode::InvalidPath, format!("unsafe path segment {:?}", decoded)));
        }
    }
    let [inbox, datanet, address, file_name] = segments.as_slice() else {
        return Err((
            ReasonCode::InvalidPath,
            format!("expected inbox/<datanet>/<0xaddress>/<file>, got {} segments", segments.len()),
        ));
    };
    if *inbox != prefix::INBOX {
        return Err((ReasonCode::InvalidPath, "not under inbox/".into()));
    }
    let contributor = parse_address(address)
        .ok_or_else(|| (ReasonCode::InvalidAddress, format!("`{}` is not a 0x address", percent_decode(address))))?;
    Ok(InboxPath { datanet: datanet.to_string(), contributor, file_name: percent_decode(file_name) })
}

/// Decode `%XX` escapes (object_store percent-encodes characters it cannot keep in a key).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";

    #[test]
    fn good_and_bad_paths() {
        let ok = parse_path(&format!("inbox/med/{A}/f.parquet")).expect("valid");
        assert_eq!(ok.datanet, "med");
        assert_eq!(ok.contributor, A);
        let bad = |k: &str| parse_path(k).expect_err(k).0;
        assert_eq!(bad(&format!("inbox/med/{A}/sub/f.parquet")), ReasonCode::InvalidPath);
        assert_eq!(bad(&format!("inbox/med/{A}/..%2Fx.parquet")), ReasonCode::InvalidPath);
        assert_eq!(bad(&format!("inbox/med/{A}/a%0Ab.parquet")), ReasonCode::InvalidPath);
        assert_eq!(bad("inbox/med/alice/f.parquet"), ReasonCode::InvalidAddress);
        assert_eq!(bad("inbox/med/f.parquet"), ReasonCode::InvalidPath);
    }
}
