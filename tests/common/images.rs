//! Test images built locally: FROM scratch plus Debian's static busybox (never pulled).

use super::{Sandbox, docker, text};

/// A test image removed when the test ends.
pub struct TestImage {
    pub tag: String,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

/// Builds `tag` FROM scratch with /bin/busybox and its applets, then `extra` Dockerfile lines.
pub fn build_busybox_image(sandbox: &Sandbox, tag: &str, extra: &str) -> TestImage {
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "these tests need Debian's static busybox at /bin/busybox: apt-get install -y busybox-static (.ci/run installs it)"
    );
    let context = sandbox
        .path()
        .join(format!("image-{}", tag.replace(['/', ':'], "_")));
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(busybox, context.join("busybox")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{extra}"
        ),
    )
    .unwrap();
    let image = TestImage {
        tag: tag.to_string(),
    };
    let out = docker(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    assert!(out.status.success(), "docker build failed: {}", text(&out));
    image
}
