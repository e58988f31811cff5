//! Records the commit ferry is built from, so that `ferry --version` tells two
//! sites' builds apart. An archive without git history (the offline source
//! archive, a package build) passes it in `FERRY_BUILD_COMMIT`, or says
//! `unknown`.

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
    let commit = std::env::var("FERRY_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Build again when HEAD or the branch it names moves (a commit, a checkout).
    // Only files that exist: cargo runs a build script whose watched file is
    // missing on every build, and ferry would be compiled again each time.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(file) = git(&["rev-parse", "--git-path", path])
            && std::path::Path::new(&file).exists()
        {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!(
        "cargo:rustc-env=FERRY_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
