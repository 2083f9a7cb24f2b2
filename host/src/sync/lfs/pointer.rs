//! LFS pointer files, as git-lfs writes and reads them (spec v1): lines of
//! `key value`, `version` first, the rest in key order, `oid sha256:<hex>`
//! and `size <bytes>` required. A blob is a candidate only under
//! [`MAX_POINTER_BYTES`], as git-lfs's scanner decides.

use std::fmt;

/// git-lfs reads blobs below this size as possible pointers.
pub const MAX_POINTER_BYTES: u64 = 1024;

const VERSIONS: [&str; 2] = [
    "https://git-lfs.github.com/spec/v1",
    // What git-lfs wrote before its first release; it still reads it.
    "https://hawser.github.com/spec/v1",
];

/// An LFS object's identity: its SHA-256 and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pointer {
    pub oid: Sha256,
    pub size: u64,
}

/// A SHA-256 digest, shown as lower-case hex as the batch API names objects.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// From 64 lower-case hex digits; anything else is `None` (git-lfs
    /// refuses upper case too).
    pub fn parse(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut digest = [0; 32];
        hex::decode_to_slice(hex, &mut digest).ok()?;
        Some(Self(digest))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The pointer `blob` holds, if it is one.
pub fn parse(blob: &[u8]) -> Option<Pointer> {
    if blob.len() as u64 >= MAX_POINTER_BYTES {
        return None;
    }
    let text = std::str::from_utf8(blob).ok()?;
    let body = text.strip_suffix('\n')?;
    let mut lines = body.split('\n');
    let (key, version) = lines.next()?.split_once(' ')?;
    if key != "version" || !VERSIONS.contains(&version) {
        return None;
    }
    let (mut oid, mut size, mut previous) = (None, None, "");
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        // Keys after the version are sorted and unique; extensions
        // (`ext-0-name`) may sit among them.
        if key <= previous
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return None;
        }
        previous = key;
        match key {
            "oid" => oid = Some(Sha256::parse(value.strip_prefix("sha256:")?)?),
            "size" => size = Some(parse_size(value)?),
            _ => {}
        }
    }
    Some(Pointer {
        oid: oid?,
        size: size?,
    })
}

/// A size as git-lfs writes it: decimal digits, no sign, no leading zero.
fn parse_size(value: &str) -> Option<u64> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    canonical.then(|| value.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    fn pointer(body: &str) -> Option<Pointer> {
        parse(body.as_bytes())
    }

    #[test]
    fn a_pointer_as_git_lfs_writes_it_is_read() {
        let p = pointer(&format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n"
        ))
        .expect("a pointer");
        assert_eq!(p.oid.to_string(), OID);
        assert_eq!(p.size, 12345);
        // Extensions sit in key order among the required keys.
        let with_ext = format!(
            "version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{OID}\noid sha256:{OID}\nsize 0\n"
        );
        assert_eq!(pointer(&with_ext).map(|p| p.size), Some(0));
    }

    #[test]
    fn anything_else_is_not_a_pointer() {
        let v = "version https://git-lfs.github.com/spec/v1";
        for body in [
            String::new(),
            "hello\n".to_string(),
            format!("{v}\noid sha256:{OID}\nsize 1"),
            format!("{v}\nsize 1\noid sha256:{OID}\n"),
            format!("{v}\noid sha256:{}\nsize 1\n", OID.to_uppercase()),
            format!("{v}\noid sha256:{}\nsize 1\n", &OID[1..]),
            format!("{v}\noid md5:{OID}\nsize 1\n"),
            format!("{v}\noid sha256:{OID}\nsize -1\n"),
            format!("{v}\noid sha256:{OID}\nsize 01\n"),
            format!("{v}\noid sha256:{OID}\nsize 99999999999999999999999\n"),
            format!("{v}\noid sha256:{OID}\n"),
            format!("version https://example.com/v9\noid sha256:{OID}\nsize 1\n"),
            format!("{v}\noid sha256:{OID}\noid sha256:{OID}\nsize 1\n"),
            format!("{v}\r\noid sha256:{OID}\r\nsize 1\r\n"),
            format!("{v}\noid sha256:{OID}\nsize 1\n{}", "x".repeat(1024)),
        ] {
            assert_eq!(pointer(&body), None, "{body:?}");
        }
        assert_eq!(parse(b"\xff\xfe"), None);
    }

    /// Upstream bytes, mangled every way: no panic, and whatever is read as
    /// a pointer names an oid and a size the bytes spell out.
    #[test]
    fn mangled_pointers_never_panic_and_never_invent() {
        let valid =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n");
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..100_000 {
            let mut bytes = valid.as_bytes().to_vec();
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = next() as u8,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"\n :0a"[(next() % 5) as usize]),
                }
            }
            if let Some(p) = parse(&bytes) {
                let text = String::from_utf8(bytes.clone()).unwrap();
                assert!(
                    text.contains(&format!("oid sha256:{}\n", p.oid)),
                    "{text:?}"
                );
                assert!(text.contains(&format!("size {}\n", p.size)), "{text:?}");
            }
        }
    }
}
