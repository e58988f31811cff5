//! The embedded tracker's synthetic data: `ferry tracker generate`, the demo
//! and the benchmarks fill a tracker with realistic issues, deterministically
//! from a seed.

use super::*;

impl LocalTracker {
    /// Creates `count` synthetic but realistic issues in `project`, deterministically
    /// from `seed` (the same seed and clock give the same issues), in one transaction
    /// so that even 100k issues take seconds. Returns their keys in creation order.
    ///
    /// Issues are created over the past year; their `updated` is the time of the
    /// generation, so that a sync cursor taken before it sees them all. `shape`
    /// spreads them over several projects and fixes their comment count, for
    /// benchmarks that need a site of a given size.
    pub fn generate(
        &mut self,
        count: usize,
        project: &str,
        seed: u64,
        shape: &GenerateShape,
    ) -> Result<Vec<String>, TrackerError> {
        check_project(project)?;
        let projects = shape.project_names(project);
        let now = self.now();
        self.write(|tx| {
            let mut rng = XorShift::new(seed);
            let mut keys = Vec::with_capacity(count);
            for i in 0..count {
                let mut issue = synthetic_issue(&mut rng, now);
                if let Some(n) = shape.comments {
                    let created = issue.created;
                    issue.comments = (0..n)
                        .map(|c| {
                            let mut comment = synthetic_comment(&mut rng);
                            comment.internal = false;
                            (comment, created + chrono::Duration::seconds(c as i64))
                        })
                        .collect();
                }
                let project = &projects[i % projects.len()];
                let (id, key) = insert_issue(tx, project, &issue.values, issue.created, now, None)?;
                for (comment, created) in &issue.comments {
                    insert_comment(tx, id, comment, *created)?;
                }
                keys.push(key);
            }
            Ok(keys)
        })
    }
}

/// xorshift64*: a tiny, fast, well-mixed PRNG, plenty for synthetic data and
/// reproducible from a seed without another crate.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // Zero is xorshift's one fixed point; mix the seed so nearby seeds diverge.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// How [`LocalTracker::generate`] lays its issues out.
#[derive(Debug, Clone, Default)]
pub struct GenerateShape {
    /// Spread the issues round-robin over this many projects, named the project
    /// key followed by 1..=N (zero-padded); 0 or 1: all in the project itself.
    pub projects: usize,
    /// Give every issue exactly this many public comments (default: 0 to 5, some
    /// internal).
    pub comments: Option<usize>,
}

impl GenerateShape {
    /// The projects the issues go to, in round-robin order.
    pub fn project_names(&self, project: &str) -> Vec<String> {
        match self.projects {
            0 | 1 => vec![project.to_string()],
            n => {
                let width = n.to_string().len();
                (1..=n).map(|i| format!("{project}{i:0width$}")).collect()
            }
        }
    }
}

/// One generated issue before it is written.
struct Synthetic {
    values: Values,
    created: DateTime<Utc>,
    /// Comments with their creation times, oldest first.
    comments: Vec<(NewComment, DateTime<Utc>)>,
}

const USERS: &[&str] = &[
    "ann", "kevin", "maria", "li", "omar", "sofia", "jon", "priya",
];
const TYPES: &[&str] = &[
    "Bug",
    "Bug",
    "Task",
    "Task",
    "Story",
    "Improvement",
    "Question",
];
const STATUSES: &[&str] = &[
    "Open",
    "Open",
    "Open",
    "In Progress",
    "In Progress",
    "Waiting",
    "Resolved",
    "Closed",
];
const PRIORITIES: &[&str] = &["Low", "Medium", "Medium", "Medium", "High", "Critical"];
const LABELS: &[&str] = &[
    "customer",
    "regression",
    "security",
    "ux",
    "performance",
    "docs",
    "backport",
];
const COMPONENTS: &[&str] = &[
    "printing", "billing", "login", "sync", "reports", "mobile", "api",
];
const SUBJECTS: &[&str] = &[
    "Printer",
    "Invoice export",
    "Login page",
    "Nightly sync",
    "Report builder",
    "Mobile app",
    "REST API",
    "Password reset",
    "Search index",
    "Dashboard",
];
const PROBLEMS: &[&str] = &[
    "fails after the last update",
    "is slow for large accounts",
    "shows a blank screen",
    "times out behind the proxy",
    "loses the user's settings",
    "needs a CSV option",
    "reports the wrong totals",
    "crashes on start",
];
const CUSTOMERS: &[&str] = &["ACME", "Globex", "Initech", "Umbrella", "Hooli", "Stark"];
const REMARKS: &[&str] = &[
    "Customer sent logs.",
    "Reproduced on staging.",
    "Could not reproduce yet; asked for the exact version.",
    "Workaround: restart the service.",
    "Fix is in review.",
    "Escalating, the customer is blocked.",
    "Same as last month's ticket?",
];

/// One realistic issue: mostly ordinary, some escalated, some with custom fields
/// and a few comments, created within the past year.
fn synthetic_issue(rng: &mut XorShift, now: DateTime<Utc>) -> Synthetic {
    const YEAR: u64 = 365 * 24 * 3600;
    let age = rng.below(YEAR) as i64;
    let created = now - chrono::Duration::seconds(age);
    let subject = rng.pick(SUBJECTS);
    let problem = rng.pick(PROBLEMS);
    let reporter = rng.pick(USERS);
    let mut labels: Vec<String> = (0..rng.below(3)).map(|_| rng.pick(LABELS).into()).collect();
    if rng.chance(15) {
        labels.push("escalate".into());
    }
    let mut fields = BTreeMap::new();
    if rng.chance(60) {
        fields.insert("Customer".into(), rng.pick(CUSTOMERS).into());
    }
    if rng.chance(40) {
        fields.insert("Severity".into(), (1 + rng.below(4)).into());
    }
    let mut values = Values {
        issue_type: rng.pick(TYPES).into(),
        summary: format!("{subject} {problem}"),
        description: rng.chance(80).then(|| {
            format!(
                "{subject} {problem}.\n\nSeen by {} users; first reported by {reporter}.",
                1 + rng.below(200)
            )
        }),
        status: rng.pick(STATUSES).into(),
        priority: Some(rng.pick(PRIORITIES).into()),
        assignee: rng.chance(70).then(|| rng.pick(USERS).into()),
        reporter: Some(reporter.into()),
        labels,
        components: (0..rng.below(3))
            .map(|_| rng.pick(COMPONENTS).into())
            .collect(),
        fields,
    };
    normalize_set(&mut values.labels);
    normalize_set(&mut values.components);
    let count = rng.below(6) as usize;
    let mut offsets: Vec<i64> = (0..count)
        .map(|_| rng.below(age as u64 + 1) as i64)
        .collect();
    offsets.sort_unstable();
    let comments = offsets
        .into_iter()
        .map(|offset| {
            (
                synthetic_comment(rng),
                created + chrono::Duration::seconds(offset),
            )
        })
        .collect();
    Synthetic {
        values,
        created,
        comments,
    }
}

/// One comment by a random user, a quarter of them internal.
fn synthetic_comment(rng: &mut XorShift) -> NewComment {
    NewComment {
        author: rng.pick(USERS).into(),
        body: rng.pick(REMARKS).into(),
        internal: rng.chance(25),
        origin: None,
    }
}
