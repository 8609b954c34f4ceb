//! Helpers for tests that program a real kernel: a thread in a fresh network namespace.

/// Runs `f` on a thread in a new network namespace whose loopback is up.
pub fn in_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) of the network namespace affects only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed (these tests need root): {}",
            std::io::Error::last_os_error()
        );
        loopback_up();
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

pub fn loopback_up() {
    // SAFETY: a plain socket for the interface ioctls, closed below; ifreq is plain data.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr),
            0,
            "SIOCGIFFLAGS lo"
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr),
            0,
            "SIOCSIFFLAGS lo"
        );
        libc::close(fd);
    }
}

/// `nft list table <family> <table>` of the calling thread's namespace (the `nft` binary is a
/// test tool only; .ci/run installs the nftables package).
pub fn nft_list(family: &str, table: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", family, table])
        .output()
        .expect("running nft (the nftables package; .ci/run installs it)");
    assert!(
        out.status.success(),
        "nft list table failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("nft prints text")
}
