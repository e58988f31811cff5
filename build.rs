//! Records the commit ferry is built from, so that `ferry --version` tells two
//! sites' builds apart. In order: `FERRY_BUILD_COMMIT`, the `COMMIT` file the
//! offline source archive carries (`scripts/offline-source.sh`: no git history
//! there), git's HEAD, or `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FERRY_BUILD_COMMIT");
    let given = std::env::var("FERRY_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    // The archive's tree may sit inside some other repository, whose HEAD is not
    // this source's commit: with a stamp, git is not asked.
    let commit = if std::path::Path::new("COMMIT").exists() {
        println!("cargo:rerun-if-changed=COMMIT");
        given.or_else(|| {
            std::fs::read_to_string("COMMIT")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|c| !c.is_empty())
        })
    } else {
        watch_head();
        given.or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
    };
    println!(
        "cargo:rustc-env=FERRY_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

/// Build again when HEAD or the branch it names moves (a commit, a checkout).
/// Only files that exist: cargo runs a build script whose watched file is
/// missing on every build, and ferry would be compiled again each time.
fn watch_head() {
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(file) = git(&["rev-parse", "--git-path", path])
            && std::path::Path::new(&file).exists()
        {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}
