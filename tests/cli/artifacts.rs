//! What a site checks before it carries a release in: `scripts/release-sums.sh`
//! signs SHA256SUMS with an SSH key, and the two documented commands
//! (`ssh-keygen -Y verify`, `sha256sum -c`) catch a changed artifact, an edited
//! sum list and a signature by another key.

use std::path::Path;
use std::process::{Command, Output};

const IDENTITY: &str = "release@ferry.example";

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn keygen(dir: &Path, name: &str) -> String {
    let key = dir.join(name);
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(key.with_extension("pub")).unwrap()
}

/// The site's check, as docs/install.md gives it: the signature, then the sums.
/// Returns which of the two failed, if any.
fn site_check(release: &Path, allowed_signers: &Path) -> Result<(), String> {
    let sums = std::fs::File::open(release.join("SHA256SUMS")).unwrap();
    let verify = run(Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(allowed_signers)
        .args(["-I", IDENTITY, "-n", "ferry-dist", "-s"])
        .arg(release.join("SHA256SUMS.sig"))
        .stdin(sums));
    if !verify.status.success() {
        return Err(format!(
            "signature: {}",
            String::from_utf8_lossy(&verify.stderr)
        ));
    }
    let sums = run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(release));
    if !sums.status.success() {
        return Err(format!("sums: {}", String::from_utf8_lossy(&sums.stdout)));
    }
    Ok(())
}

#[test]
fn release_sums_verify_and_catch_a_changed_artifact_list_or_key() {
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    std::fs::create_dir(&release).unwrap();
    // Small stand-ins for the .deb and the offline source archive.
    let deb = release.join("ferry_0.1.0_amd64.deb");
    std::fs::write(&deb, b"!<arch>\ndebian-binary a stand-in package").unwrap();
    std::fs::write(
        release.join("ferry-0.1.0-src.tar.gz"),
        [0x1f, 0x8b, 8, 0, 1, 2, 3],
    )
    .unwrap();
    let key = keygen(tmp.path(), "release_key");
    let other = keygen(tmp.path(), "other_key");
    let signers = |public: &str| {
        let file = tmp.path().join("allowed_signers");
        std::fs::write(
            &file,
            format!("{IDENTITY} namespaces=\"ferry-dist\" {public}"),
        )
        .unwrap();
        file
    };

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/release-sums.sh");
    let signed = run(Command::new(&script)
        .arg(tmp.path().join("release_key"))
        .arg(&release));
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let sums = std::fs::read_to_string(release.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    assert!(sums.contains("  ferry_0.1.0_amd64.deb\n"), "{sums}");

    site_check(&release, &signers(&key)).unwrap();

    // One byte of the package changed: the signature still holds, the sum not.
    let original = std::fs::read(&deb).unwrap();
    let mut changed = original.clone();
    changed[10] ^= 1;
    std::fs::write(&deb, &changed).unwrap();
    let err = site_check(&release, &signers(&key)).unwrap_err();
    assert!(err.starts_with("sums:") && err.contains("FAILED"), "{err}");
    std::fs::write(&deb, &original).unwrap();
    site_check(&release, &signers(&key)).unwrap();

    // The sum list edited to match a changed artifact: the signature fails.
    let edited = sums.replacen(&sums[..1], if &sums[..1] == "0" { "1" } else { "0" }, 1);
    std::fs::write(release.join("SHA256SUMS"), &edited).unwrap();
    let err = site_check(&release, &signers(&key)).unwrap_err();
    assert!(err.starts_with("signature:"), "{err}");
    std::fs::write(release.join("SHA256SUMS"), &sums).unwrap();

    // A site that trusts another key refuses the release.
    let err = site_check(&release, &signers(&other)).unwrap_err();
    assert!(err.starts_with("signature:"), "{err}");
    site_check(&release, &signers(&key)).unwrap();
}
