//! `auth-type: basic`: htpasswd entries as nginx's auth_basic checks them — Apache's `$apr1$`
//! MD5 (htpasswd's default), bcrypt (`htpasswd -B`), `{SHA}` and `{PLAIN}`.

use std::collections::HashMap;

use base64::Engine;
use md5::{Digest, Md5};

/// `user:hash` lines (comments and blanks skipped).
pub fn parse_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.to_string(), h.trim().to_string()))
        .collect()
}

const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn to64(out: &mut String, mut v: u32, n: usize) {
    for _ in 0..n {
        out.push(ITOA64[(v & 0x3f) as usize] as char);
        v >>= 6;
    }
}

/// Apache's MD5-crypt (`$apr1$salt$…`).
pub fn apr1(password: &[u8], salt: &[u8]) -> String {
    let magic = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(magic)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    let f = |i: usize| fin[i] as u32;
    let mut out = format!("$apr1${}$", String::from_utf8_lossy(salt));
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64(&mut out, (f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    to64(&mut out, f(11), 2);
    out
}

/// Whether `password` matches an htpasswd `hash`.
pub fn verify(password: &str, hash: &str) -> bool {
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let salt = rest.split('$').next().unwrap_or_default();
        return constant_eq(
            apr1(password.as_bytes(), salt.as_bytes()).as_bytes(),
            hash.as_bytes(),
        );
    }
    if hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let digest = sha1::Sha1::digest(password.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(digest);
        return constant_eq(want.as_bytes(), b64.as_bytes());
    }
    if let Some(plain) = hash.strip_prefix("{PLAIN}") {
        return constant_eq(password.as_bytes(), plain.as_bytes());
    }
    false
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks an `Authorization: Basic …` header against the users.
pub fn allowed(header: Option<&str>, users: &HashMap<String, String>) -> bool {
    let Some(b64) = header.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
    }) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return false;
    };
    let Ok(text) = String::from_utf8(raw) else {
        return false;
    };
    let Some((user, password)) = text.split_once(':') else {
        return false;
    };
    users.get(user).is_some_and(|h| verify(password, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl() {
        // `openssl passwd -apr1 -salt xyz password` and a password longer than 16 bytes.
        assert_eq!(
            apr1(b"password", b"xyz"),
            "$apr1$xyz$NU.niW1.aK5j0LYFfMca4/"
        );
        assert_eq!(
            apr1(b"a much longer password than sixteen", b"12345678"),
            "$apr1$12345678$iHG6z5QyvBj5X7XsjhPcb/"
        );
        assert!(verify("password", "$apr1$xyz$NU.niW1.aK5j0LYFfMca4/"));
        assert!(!verify("Password", "$apr1$xyz$NU.niW1.aK5j0LYFfMca4/"));
    }

    #[test]
    fn basic_header() {
        let users =
            parse_file("# comment\nfoo:{PLAIN}bar\nsha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
        let b = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(allowed(Some(&b("foo:bar")), &users));
        assert!(!allowed(Some(&b("foo:baz")), &users));
        assert!(allowed(Some(&b("sha:password")), &users));
        assert!(!allowed(None, &users));
        assert!(!allowed(Some("Basic !!"), &users));
    }
}
