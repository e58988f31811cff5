//! `ferry demo`: the whole story in a temporary folder, narrated.
//!
//! Two sites (a support desk and an engineering team), one bare exchange repo, the
//! embedded tracker on both sides. With `--bundles` there is no shared repo: the
//! sites exchange bundle files through two folders standing for a USB stick.
//! Everything runs through the same library calls as `ferry sync`; the demo only
//! adds the narration.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Ctx, ExitStatus, report};
use crate::config::{
    BundleSettings, CONNECTIONS_DIR, ChannelSetting, Config, ConnectionFile,
    DEFAULT_MAX_BUNDLE_BYTES, Direction, SyncMethod,
};
use crate::engine::{self, SyncOptions};
use crate::exchange::own_branch;
use crate::model::Issue;
use crate::signing::{SignaturePolicy, SiteKey, add_trusted_key};
use crate::site::{LOCAL_TRACKER_YAML, Missing, Site, ensure_signing_key, scaffold};
use crate::tracker::{IssuePatch, NewComment, NewIssue};

/// Run the two-site story in a temporary folder and narrate it.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Build the demo in this folder (must be empty or absent) and keep it, to look
    /// around afterwards with `ferry --dir DIR/support tracker list` and `git log`.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Air-gapped: no shared repository, the sites exchange git bundle files
    /// through an outbox and an inbox folder (usb/ in the demo folder).
    #[arg(long)]
    bundles: bool,
}

/// The folders standing for the USB stick in `--bundles` mode.
const TO_ENGINEERING: &str = "usb/support-to-engineering";
const TO_SUPPORT: &str = "usb/engineering-to-support";

/// The support site's incoming rule in the demo: engineering's statuses mapped to
/// the support desk's own workflow.
const SUPPORT_INCOMING: &str = include_str!("../../samples/rules/status-mapping-incoming.rhai");

/// Runs the demo.
pub fn run(args: DemoArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    let temp;
    let root = match args.keep {
        Some(dir) => {
            if dir.exists() && dir.read_dir()?.next().is_some() {
                return Err(super::UsageError(format!("{} is not empty", dir.display())).into());
            }
            std::fs::create_dir_all(&dir)?;
            dir
        }
        None => {
            temp = tempfile::Builder::new().prefix("ferry-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    Story::new(&root, args.bundles, &mut ctx.out)?.tell()?;
    Ok(ExitStatus::Success)
}

struct Story<'a> {
    root: PathBuf,
    /// Bundle files instead of a shared repo.
    bundles: bool,
    out: &'a mut dyn Write,
}

impl<'a> Story<'a> {
    fn new(root: &Path, bundles: bool, out: &'a mut dyn Write) -> anyhow::Result<Story<'a>> {
        Ok(Story {
            root: root.to_path_buf(),
            bundles,
            out,
        })
    }

    fn site_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn heading(&mut self, n: usize, text: &str) -> anyhow::Result<()> {
        writeln!(self.out, "\n== {n}. {text}")?;
        Ok(())
    }

    fn say(&mut self, text: &str) -> anyhow::Result<()> {
        for line in text.lines() {
            writeln!(self.out, "   {line}")?;
        }
        Ok(())
    }

    fn tell(&mut self) -> anyhow::Result<()> {
        let how = if self.bundles {
            "never connect to\nanything: git bundle files travel on a USB stick (two folders here)."
        } else {
            "never\nconnect to each other, only to one shared git repository."
        };
        writeln!(
            self.out,
            "ferry demo: a support desk escalates an issue to engineering; they {how}\n\
             Folder: {}",
            self.root.display()
        )?;

        if self.bundles {
            self.heading(1, "Set up: two sites and a USB stick, no shared repo")?;
            for dir in [TO_ENGINEERING, TO_SUPPORT] {
                std::fs::create_dir_all(self.root.join(dir))
                    .with_context(|| format!("creating {dir}"))?;
            }
        } else {
            self.heading(1, "Set up: one bare exchange repo, two sites")?;
            let exchange = self.root.join("exchange.git");
            git2::Repository::init_bare(&exchange).context("creating the exchange repo")?;
        }
        self.setup_site(
            "support",
            "SUP",
            "ENG",
            "labels = escalate AND status != Closed",
        )?;
        self.setup_site("engineering", "ENG", "SUP", "labels = customer-facing")?;
        self.exchange_keys("support", "engineering")?;
        self.exchange_keys("engineering", "support")?;
        std::fs::write(
            self.site_dir("support").join("rules/incoming.rhai"),
            SUPPORT_INCOMING,
        )?;
        let channel = if self.bundles {
            "usb/support-to-engineering   support's outbox, engineering's inbox\n\
             usb/engineering-to-support   engineering's outbox, support's inbox"
        } else {
            "exchange.git             the intermediate repo both sites push to and pull from"
        };
        self.say(channel)?;
        self.say(
            "support/                 ferry.yaml, rules/, connections/engineering.yaml, tracker.db\n\
             engineering/             the same, for the engineering site\n\
             support shares issues matching: labels = escalate AND status != Closed\n\
             support maps engineering's statuses to its own (rules/incoming.rhai)\n\
             each site signs its commits with .ferry/signing_key and trusts the other's\n\
             public key (connections/<peer>.allowed_signers, `ferry connection trust`)",
        )?;

        self.heading(2, "Support: ann files two issues, one is escalated")?;
        let log = self.root.join("printer.log");
        std::fs::write(
            &log,
            "10:02:11 fuser temperature 212C (limit 190C)\n10:02:12 thermal cutoff\n",
        )?;
        let sup1 = self.act("support", |site| {
            let issue = site.tracker.create(&new_issue(
                "SUP",
                "ann",
                "Printer on fire",
                "Smoke seen after the last firmware update.",
                &["customer", "escalate"],
                "High",
            ))?;
            site.tracker
                .add_comment(&issue.id, &comment("ann", "Customer sent logs.", false))?;
            site.tracker.add_comment(
                &issue.id,
                &comment(
                    "ann",
                    "INTERNAL: this customer is on a discounted contract.",
                    true,
                ),
            )?;
            let (size, sha256) = crate::attachment::copy_hashing(
                &mut std::fs::File::open(&log)?,
                &mut std::io::sink(),
            )?;
            site.tracker.attach(
                &issue.id,
                &crate::tracker::NewAttachment {
                    name: "printer.log",
                    author: "ann",
                    path: &log,
                    size,
                    sha256: &sha256,
                },
            )?;
            site.tracker.create(&new_issue(
                "SUP",
                "bob",
                "Password reset link expired",
                "Handled by support alone.",
                &["customer"],
                "Low",
            ))?;
            Ok(issue)
        })?;
        self.say(&format!(
            "{} \"Printer on fire\" (label escalate), a public comment, an internal one\n\
             and the printer's log attached\n\
             SUP-2 \"Password reset link expired\" (not escalated: stays at support)",
            sup1.key
        ))?;

        self.heading(3, "Support runs `ferry sync`")?;
        self.sync("support")?;
        self.show_replica(
            "support",
            "engineering",
            &format!("issues/SUP/{}.yaml", sup1.id),
        )?;
        self.say("The internal comment is not in the replica: it never leaves the site.")?;

        self.heading(4, "Engineering runs `ferry sync`: the escalation arrives")?;
        self.sync("engineering")?;
        let eng1 = self.act("engineering", |site| {
            let origin = crate::model::Origin {
                site: "support".into(),
                id: sup1.id.clone(),
            };
            site.tracker
                .find_by_origin(&origin)?
                .context("the escalated issue did not arrive")
        })?;
        self.show_issue("engineering", &eng1)?;

        self.heading(5, "Engineering works on it")?;
        self.act("engineering", |site| {
            site.tracker.add_comment(
                &eng1.id,
                &comment(
                    "kevin",
                    "Reproduced: firmware 2.1 overheats the fuser. Fix in 2.1.1.",
                    false,
                ),
            )?;
            site.tracker.add_comment(
                &eng1.id,
                &comment("kevin", "INTERNAL: vendor blamed us last time too.", true),
            )?;
            let patch = IssuePatch {
                status: Some("In Progress".into()),
                assignee: Some(Some("kevin".into())),
                ..Default::default()
            };
            site.tracker.update(&eng1.id, &patch, "kevin")?;
            Ok(())
        })?;
        self.say("kevin comments publicly, adds an internal note, moves it to In Progress.")?;

        self.heading(
            6,
            "Engineering syncs; the replica diff is what support will read",
        )?;
        let before = self.branch_head("engineering", "support")?;
        self.sync("engineering")?;
        self.show_diff(
            "engineering",
            "support",
            before,
            &format!("issues/ENG/{}.yaml", eng1.id),
        )?;

        self.heading(
            7,
            "Support syncs: the public comment and the mapped status arrive",
        )?;
        self.sync("support")?;
        let sup1_now = self.act("support", |site| {
            site.tracker.get(&sup1.id)?.context("SUP-1 vanished")
        })?;
        self.show_issue("support", &sup1_now)?;

        self.heading(8, "Both sync again until nothing moves")?;
        self.sync("engineering")?;
        self.sync("support")?;
        self.say("Nothing changed, so nothing was committed: the loop is quiet.")?;

        self.heading(
            9,
            if self.bundles {
                "What was carried, and what engineering's clone holds"
            } else {
                "What is in the exchange repo"
            },
        )?;
        self.audit()?;
        let look = if self.bundles {
            "`git bundle verify` or `git bundle list-heads` on DIR/usb/*/archive/*.bundle"
        } else {
            "`git -C DIR/exchange.git log --all`"
        };
        writeln!(
            self.out,
            "\nDone. Try it yourself: `ferry demo --keep DIR`, then look around with\n\
             `ferry --dir DIR/support tracker list` and {look}."
        )?;
        Ok(())
    }

    fn setup_site(
        &mut self,
        name: &str,
        project: &str,
        remote: &str,
        query: &str,
    ) -> anyhow::Result<()> {
        let dir = self.site_dir(name);
        scaffold(&dir, name, LOCAL_TRACKER_YAML)?;
        ensure_signing_key(&Config::load(&dir)?)?;
        let peer = if name == "support" {
            "engineering"
        } else {
            "support"
        };
        let channel = if self.bundles {
            let (outbox, inbox) = if name == "support" {
                (TO_ENGINEERING, TO_SUPPORT)
            } else {
                (TO_SUPPORT, TO_ENGINEERING)
            };
            ChannelSetting::Bundles(BundleSettings {
                outbox: Path::new("..").join(outbox),
                inbox: Path::new("..").join(inbox),
                max_bytes: DEFAULT_MAX_BUNDLE_BYTES,
                encrypt: false,
            })
        } else {
            ChannelSetting::Git("../exchange.git".into())
        };
        let connection = ConnectionFile {
            channel,
            direction: Direction::Both,
            method: SyncMethod::Auto,
            projects: [(project.to_string(), remote.to_string())].into(),
            query: query.into(),
            outgoing: "rules/outgoing.rhai".into(),
            incoming: "rules/incoming.rhai".into(),
            stale_after_hours: None,
            conflicts: Default::default(),
            review: Default::default(),
            release: Default::default(),
            signatures: SignaturePolicy::Required,
            attachments: Default::default(),
        };
        let file = dir.join(CONNECTIONS_DIR).join(format!("{peer}.yaml"));
        crate::config::write_atomic(&file, serde_yaml::to_string(&connection)?.as_bytes())?;
        // As `ferry init` does: opening the new site creates its state.
        drop(Site::open_with(&dir, Missing::Create)?);
        Ok(())
    }

    /// What `ferry key show` at `from` and `ferry connection trust from KEY` at
    /// `to` do: `to` now accepts commits signed by `from`.
    fn exchange_keys(&mut self, from: &str, to: &str) -> anyhow::Result<()> {
        let key = SiteKey::load(&Config::load(&self.site_dir(from))?.signing_key_path())?;
        let config = Config::load(&self.site_dir(to))?;
        add_trusted_key(&config.connection(from)?.trust, &key.public_key())?;
        Ok(())
    }

    fn act<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Site) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut site = Site::open(&self.site_dir(name))?;
        f(&mut site)
    }

    fn sync(&mut self, name: &str) -> anyhow::Result<()> {
        let mut site = Site::open(&self.site_dir(name))?;
        let run = engine::sync(&mut site, &SyncOptions::default())
            .map_err(crate::failure::RunFailure::into_error)?;
        writeln!(self.out, "   $ ferry sync    (at {name})")?;
        let mut text = Vec::new();
        let status = report::sync(&mut text, &run, report::Listing::All)?;
        self.say(&String::from_utf8_lossy(&text))?;
        anyhow::ensure!(
            status == ExitStatus::Success,
            "the demo's sync at {name} reported errors"
        );
        if self.bundles {
            self.show_outboxes()?;
        }
        Ok(())
    }

    /// The bundles waiting on the stick, with their sizes.
    fn show_outboxes(&mut self) -> anyhow::Result<()> {
        let mut lines = Vec::new();
        for dir in [TO_ENGINEERING, TO_SUPPORT] {
            for (name, size) in bundle_files(&self.root.join(dir))? {
                lines.push(format!("  {dir}/{name}  {size} bytes"));
            }
        }
        if !lines.is_empty() {
            self.say(&format!("on the USB stick:\n{}", lines.join("\n")))?;
        }
        Ok(())
    }

    fn branch_head(&mut self, site: &str, peer: &str) -> anyhow::Result<Option<git2::Oid>> {
        let s = Site::open(&self.site_dir(site))?;
        Ok(s.exchange.resolve(&own_branch(site, peer))?)
    }

    fn show_replica(&mut self, site: &str, peer: &str, path: &str) -> anyhow::Result<()> {
        let s = Site::open(&self.site_dir(site))?;
        let head = s
            .exchange
            .resolve(&own_branch(site, peer))?
            .context("no commit")?;
        let (stored, blob) = s.exchange.find_replica(head, path)?.context("no replica")?;
        let bytes = s.exchange.read_blob(blob)?;
        self.say(&format!("{stored} on branch {site}/{peer}:"))?;
        self.say(&indent(&String::from_utf8_lossy(&bytes)))?;
        Ok(())
    }

    fn show_diff(
        &mut self,
        site: &str,
        peer: &str,
        before: Option<git2::Oid>,
        path: &str,
    ) -> anyhow::Result<()> {
        let s = Site::open(&self.site_dir(site))?;
        let head = s
            .exchange
            .resolve(&own_branch(site, peer))?
            .context("no commit")?;
        let old = match before {
            Some(b) => match s.exchange.find_replica(b, path)? {
                Some((_, blob)) => s.exchange.read_blob(blob)?,
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        let (_, blob) = s.exchange.find_replica(head, path)?.context("no replica")?;
        let new = s.exchange.read_blob(blob)?;
        let (old, new) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(&new));
        let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
        let text = diff
            .unified_diff()
            .context_radius(2)
            .header(&format!("a/{path}"), &format!("b/{path}"))
            .to_string();
        self.say(&indent(&text))?;
        Ok(())
    }

    fn show_issue(&mut self, site: &str, issue: &Issue) -> anyhow::Result<()> {
        let mut text = format!(
            "{} at {site}: {}\n  status: {}   priority: {}   assignee: {}\n  labels: {}\n",
            issue.key,
            issue.summary,
            issue.status,
            issue.priority.as_deref().unwrap_or("-"),
            issue.assignee.as_deref().unwrap_or("-"),
            issue.labels.join(", ")
        );
        if let Some(origin) = &issue.origin {
            text.push_str(&format!("  created by sync from {origin}\n"));
        }
        for c in &issue.comments {
            let via = c
                .origin
                .as_ref()
                .map(|o| format!(" (via {})", o.site))
                .unwrap_or_default();
            let internal = if c.internal { " [internal]" } else { "" };
            text.push_str(&format!("  - {}{via}{internal}: {}\n", c.author, c.body));
        }
        for a in &issue.attachments {
            text.push_str(&format!(
                "  attached: {} ({} bytes, sha256 {}...)\n",
                a.name,
                a.size,
                &a.sha256[..a.sha256.len().min(12)]
            ));
        }
        self.say(&text)
    }

    fn audit(&mut self) -> anyhow::Result<()> {
        if self.bundles {
            let mut lines = Vec::new();
            for dir in [TO_ENGINEERING, TO_SUPPORT] {
                let archive = self
                    .root
                    .join(dir)
                    .join(crate::transport::bundle::ARCHIVE_DIR);
                for (name, size) in bundle_files(&archive)? {
                    lines.push(format!("{dir}/archive/{name}  {size} bytes"));
                }
            }
            self.say(&format!(
                "bundles carried, archived after import; each holds only what the peer had\n\
                 not acknowledged when it was written (everything, before its first answer):\n{}",
                lines.join("\n")
            ))?;
        }
        // Without a shared repo, what engineering received is in its own clone.
        let repo_dir = if self.bundles {
            self.site_dir("engineering").join(".ferry/exchange.git")
        } else {
            self.root.join("exchange.git")
        };
        let repo = git2::Repository::open_bare(repo_dir)?;
        let mut branches = Vec::new();
        let (mut total, mut verified) = (0, 0);
        for r in repo.references()? {
            let r = r?;
            if let (Ok(name), Some(oid)) = (r.name(), r.target()) {
                let commits = {
                    let mut walk = repo.revwalk()?;
                    walk.push(oid)?;
                    walk.count()
                };
                branches.push(format!("{name}: {commits} commit(s)"));
                total += commits;
                if let Some((owner, reader)) = name
                    .strip_prefix("refs/heads/")
                    .and_then(|b| b.split_once('/'))
                {
                    let config = Config::load(&self.site_dir(reader))?;
                    verified += config
                        .connection(owner)?
                        .trust
                        .admit(&repo, None, oid, name)?;
                }
            }
        }
        self.say(&branches.join("\n"))?;
        self.say(&format!(
            "commits whose signature the receiving site verified: {verified} of {} (each \
             site signs with its own key; `git verify-commit` accepts them too)",
            total
        ))?;
        let mut leaked = 0;
        let odb = repo.odb()?;
        odb.foreach(|oid| {
            if let Ok(obj) = odb.read(*oid) {
                let data = String::from_utf8_lossy(obj.data());
                if data.contains("INTERNAL:") {
                    leaked += 1;
                }
            }
            true
        })?;
        self.say(&format!(
            "objects containing an internal comment's text: {leaked} (internal notes never leave a site)"
        ))?;
        Ok(())
    }
}

/// Bundle files of a folder with their sizes, by name.
fn bundle_files(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    if !dir.is_dir() {
        return Ok(files);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".bundle") {
            files.push((name, entry.metadata()?.len()));
        }
    }
    files.sort();
    Ok(files)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn new_issue(
    project: &str,
    author: &str,
    summary: &str,
    description: &str,
    labels: &[&str],
    priority: &str,
) -> NewIssue {
    NewIssue {
        project: project.into(),
        patch: IssuePatch {
            issue_type: Some("Bug".into()),
            summary: Some(summary.into()),
            description: Some(Some(description.into())),
            priority: Some(Some(priority.into())),
            reporter: Some(Some(author.into())),
            labels: Some(labels.iter().map(|l| l.to_string()).collect()),
            ..Default::default()
        },
        author: author.into(),
        origin: None,
    }
}

fn comment(author: &str, body: &str, internal: bool) -> NewComment {
    NewComment {
        author: author.into(),
        body: body.into(),
        internal,
        origin: None,
    }
}
