//! SHA-256-crypt (`$5$salt$hash`), which PVE's `encrypt_pw` uses to store `cipassword`.

use sha2::{Digest, Sha256};

const ROUNDS: usize = 5000;
const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn repeat_to(src: &[u8], len: usize) -> Vec<u8> {
    src.iter().cycle().take(len).copied().collect()
}

/// `crypt(password, "$5$salt$")` with the default 5000 rounds.
pub fn sha256_crypt(password: &str, salt: &str) -> String {
    let pw = password.as_bytes();
    let salt = &salt.as_bytes()[..salt.len().min(16)];

    let b = Sha256::new().chain_update(pw).chain_update(salt).chain_update(pw).finalize();
    let mut a = Sha256::new().chain_update(pw).chain_update(salt);
    a.update(repeat_to(&b, pw.len()));
    let mut n = pw.len();
    while n > 0 {
        if n & 1 == 1 {
            a.update(b);
        } else {
            a.update(pw);
        }
        n >>= 1;
    }
    let a = a.finalize();

    let mut dp = Sha256::new();
    for _ in 0..pw.len() {
        dp.update(pw);
    }
    let p = repeat_to(&dp.finalize(), pw.len());

    let mut ds = Sha256::new();
    for _ in 0..(16 + usize::from(a[0])) {
        ds.update(salt);
    }
    let s = repeat_to(&ds.finalize(), salt.len());

    let mut c = a.to_vec();
    for i in 0..ROUNDS {
        let mut ctx = Sha256::new();
        if i % 2 == 1 {
            ctx.update(&p);
        } else {
            ctx.update(&c);
        }
        if i % 3 != 0 {
            ctx.update(&s);
        }
        if i % 7 != 0 {
            ctx.update(&p);
        }
        if i % 2 == 1 {
            ctx.update(&c);
        } else {
            ctx.update(&p);
        }
        c = ctx.finalize().to_vec();
    }

    let order: [(usize, usize, usize); 10] =
        [(0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29)];
    let mut out = format!("$5${}$", String::from_utf8_lossy(salt));
    let mut emit = |b2: u8, b1: u8, b0: u8, n: usize| {
        let mut w = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
        for _ in 0..n {
            out.push(char::from(ITOA64[(w & 0x3f) as usize]));
            w >>= 6;
        }
    };
    for (x, y, z) in order {
        emit(c[x], c[y], c[z], 4);
    }
    emit(0, c[31], c[30], 3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_openssl_passwd_5() {
        // openssl passwd -5 -salt saltstring 'Hello world!'
        assert_eq!(sha256_crypt("Hello world!", "saltstring"), "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5");
    }
}
