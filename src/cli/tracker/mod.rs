//! `ferry tracker ...`: act on the embedded (local) tracker by hand.
//!
//! One file per subcommand. They all open the tracker named in `ferry.yaml`, act as
//! the user given by `--as` (else `FERRY_USER`, else `USER`, else `admin`), and
//! write only to [`Ctx::out`]. Issues are named by key (`SUP-1`). `--json` output is
//! the [`crate::model::Issue`] shape documented in `docs/json.md`.

mod attach;
mod comment;
mod delete;
mod detach;
mod download;
mod edit;
mod generate;
mod link;
mod list;
mod move_issue;
mod new;
mod show;
mod unlink;

use clap::Subcommand;

use super::{Ctx, ExitStatus, UsageError};
use crate::config::{Config, TrackerConfig};
use crate::model::{Attachment, FieldValue, Issue};
use crate::tracker::local::LocalTracker;
use crate::tracker::{Tracker, TrackerError};

/// Act on the embedded tracker: create, edit, comment on, attach files to, link,
/// delete, show, list issues.
///
/// Issues are named by key (SUP-1). Changes are made as the user given by --as,
/// else $FERRY_USER, else $USER, else admin. FERRY_NOW (an RFC 3339 time) fixes the
/// clock, for reproducible output.
#[derive(Debug, clap::Args)]
pub struct TrackerArgs {
    /// Boxed: the subcommands' options are large, and `ferry`'s command enum
    /// should not grow to the size of its largest variant.
    #[command(subcommand)]
    command: Box<TrackerCommand>,
}

#[derive(Debug, Subcommand)]
enum TrackerCommand {
    New(new::NewArgs),
    Edit(edit::EditArgs),
    Comment(comment::CommentArgs),
    Attach(attach::AttachArgs),
    Download(download::DownloadArgs),
    Detach(detach::DetachArgs),
    Delete(delete::DeleteArgs),
    Move(move_issue::MoveArgs),
    Link(link::LinkArgs),
    Unlink(unlink::UnlinkArgs),
    Show(show::ShowArgs),
    List(list::ListArgs),
    Generate(generate::GenerateArgs),
}

/// Runs a tracker subcommand.
pub fn run(args: TrackerArgs, ctx: &mut Ctx) -> anyhow::Result<ExitStatus> {
    match *args.command {
        TrackerCommand::New(args) => new::run(args, ctx),
        TrackerCommand::Edit(args) => edit::run(args, ctx),
        TrackerCommand::Comment(args) => comment::run(args, ctx),
        TrackerCommand::Attach(args) => attach::run(args, ctx),
        TrackerCommand::Download(args) => download::run(args, ctx),
        TrackerCommand::Detach(args) => detach::run(args, ctx),
        TrackerCommand::Delete(args) => delete::run(args, ctx),
        TrackerCommand::Move(args) => move_issue::run(args, ctx),
        TrackerCommand::Link(args) => link::run(args, ctx),
        TrackerCommand::Unlink(args) => unlink::run(args, ctx),
        TrackerCommand::Show(args) => show::run(args, ctx),
        TrackerCommand::List(args) => list::run(args, ctx),
        TrackerCommand::Generate(args) => generate::run(args, ctx),
    }
}

/// The user a command acts as.
#[derive(Debug, Clone, clap::Args)]
struct Actor {
    /// Act as this user [default: $FERRY_USER, else $USER, else admin].
    #[arg(long = "as", value_name = "USER")]
    user: Option<String>,
}

impl Actor {
    fn name(&self) -> String {
        self.user
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(super::operator)
    }
}

/// Opens the site's tracker as `ferry.yaml` configures it.
fn open(ctx: &Ctx) -> anyhow::Result<LocalTracker> {
    let config = Config::load(&ctx.dir)?;
    // Only the local tracker can be acted on by hand: a real tracker has its own
    // user interface, and ferry acting there would bypass it.
    match &config.site.tracker {
        TrackerConfig::Local { path } => Ok(LocalTracker::open(&config.resolve(path))?),
        TrackerConfig::Redmine(redmine) => Err(UsageError(format!(
            "`ferry tracker` acts on the embedded tracker only; this site's issues are in Redmine at {}",
            redmine.url
        ))
        .into()),
        TrackerConfig::Jira(jira) => Err(super::UsageError(format!(
            "`ferry tracker` acts on the embedded tracker only; this site uses Jira at {}: \
             change issues there",
            jira.url
        ))
        .into()),
    }
}

/// The issue with this key; an unknown key is an error naming it.
fn find(tracker: &LocalTracker, key: &str) -> anyhow::Result<Issue> {
    tracker
        .get_by_key(key)?
        .ok_or_else(|| TrackerError::NotFound(key.into()).into())
}

/// Like [`find`], but a deleted issue cannot be changed.
fn find_live(tracker: &LocalTracker, key: &str) -> anyhow::Result<Issue> {
    let issue = find(tracker, key)?;
    anyhow::ensure!(!issue.deleted, "{key} is deleted");
    Ok(issue)
}

/// The attachment of `issue` with this name, or this id when several share a
/// name; an error lists what the issue has.
fn find_attachment<'a>(issue: &'a Issue, name: &str) -> anyhow::Result<&'a Attachment> {
    let named: Vec<&Attachment> = issue
        .attachments
        .iter()
        .filter(|a| a.name == name)
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => issue
            .attachments
            .iter()
            .find(|a| a.id == name)
            .ok_or_else(|| {
                let names: Vec<&str> = issue.attachments.iter().map(|a| a.name.as_str()).collect();
                anyhow::anyhow!(
                    "{} has no attachment {name:?} (it has: {})",
                    issue.key,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            }),
        several => {
            let ids: Vec<&str> = several.iter().map(|a| a.id.as_str()).collect();
            anyhow::bail!(
                "{} has {} attachments named {name:?} (ids {}); give the id instead",
                issue.key,
                several.len(),
                ids.join(", ")
            )
        }
    }
}

/// Parses `--field NAME=VALUE`: VALUE is read as a YAML scalar, so `2` is a number
/// and `true` a boolean; an empty VALUE is `null`, which removes the field. Text
/// that YAML would read as a list or map (or not at all) stays text.
fn parse_field(arg: &str) -> Result<(String, FieldValue), String> {
    let (name, text) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {arg:?}"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("the field name is empty in {arg:?}"));
    }
    let value = match serde_yaml::from_str::<FieldValue>(text) {
        Ok(value) if !value.is_array() && !value.is_object() => value,
        _ => FieldValue::String(text.into()),
    };
    Ok((name.into(), value))
}

/// An optional text option: an empty value clears the field.
fn clearable(value: Option<String>) -> Option<Option<String>> {
    value.map(|v| Some(v).filter(|v| !v.is_empty()))
}

/// Wraps a usage mistake so that it exits 2.
fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_are_yaml_scalars() {
        let parse = |s| parse_field(s).unwrap().1;
        assert_eq!(parse("Severity=2"), FieldValue::from(2));
        assert_eq!(parse("Ratio=1.5"), FieldValue::from(1.5));
        assert_eq!(parse("Flag=true"), FieldValue::from(true));
        assert_eq!(parse("Customer=ACME"), FieldValue::from("ACME"));
        assert_eq!(parse("Quoted='2'"), FieldValue::from("2"));
        assert_eq!(parse("Note=a: b"), FieldValue::from("a: b"));
        assert_eq!(parse("List=[1, 2]"), FieldValue::from("[1, 2]"));
        assert_eq!(parse("Bad='open"), FieldValue::from("'open"));
        assert_eq!(parse("Gone="), FieldValue::Null);
        assert_eq!(parse_field(" Eq = x=y ").unwrap().0, "Eq");
        assert!(parse_field("novalue").is_err());
        assert!(parse_field("=1").is_err());
    }
}
