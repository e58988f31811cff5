//! A fuzz harness on stable Rust for every parser of untrusted input: replica
//! YAML and the depth check before it, `site.yaml`, bundle headers, the packs
//! inside bundles, the query language and attachment names.
//!
//! Each parser gets, from a generator with a fixed seed (so a run is repeatable),
//! random bytes, random text from the characters its grammar cares about, and
//! mutations of valid inputs (pieces spliced in, cut out, repeated, nested,
//! indented, truncated, crossed with another valid input). Every input must be
//! handled without a panic, within a time budget per input (100 ms of CPU time in
//! a release build), and keep the parser's own promises (a query prints back to itself, a
//! safe attachment name stays safe, what passes the depth check nests no deeper
//! than it said).
//!
//! `cargo test` runs a smoke run of 2 000 inputs per parser so the harness cannot
//! rot. The real run is ignored by default:
//!
//! ```sh
//! FERRY_FUZZ_ITERATIONS=1000000 cargo test --release --test fuzz -- --ignored --nocapture
//! ```
//!
//! Inputs that fail are written to `tests/fuzz-corpus/<parser>/` and replayed
//! first on every later run: commit them with the fix.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry::attachment::safe_file_name;
use ferry::pack::index::{PackLimits, index_from_peer};
use ferry::pack::write_thin;
use ferry::query::Query;
use ferry::replica::{Replica, SiteFile};
use ferry::transport::bundle::parse_header;
use ferry::yaml_depth::{self, MAX_DEPTH};

/// Inputs per parser in the ignored full run unless `FERRY_FUZZ_ITERATIONS` says.
const DEFAULT_ITERATIONS: usize = 10_000;
/// Inputs per parser in the smoke run every `cargo test` makes.
const SMOKE_ITERATIONS: usize = 2_000;
/// How many failures of one parser are collected before it stops.
const MAX_FAILURES: usize = 10;

/// The time one input may take. Unoptimised builds (the smoke run) get more: the
/// budget is there to catch blow-ups, not to measure speed.
fn budget() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(100)
    }
}

/// One parser under test: its name, valid inputs to mutate, the characters and
/// pieces its grammar cares about, and the check of one input (an `Err` is a
/// broken promise; a panic is caught and reported as one).
struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    alphabet: &'static [&'static str],
    pieces: &'static [&'static str],
    check: fn(&[u8]) -> Result<(), String>,
}

/// What one run of a target found.
struct Outcome {
    inputs: usize,
    elapsed: Duration,
    slowest: Duration,
    slowest_len: usize,
    failures: Vec<(Vec<u8>, String)>,
}

const GOOD_REPLICA: &str = "ferry: 1\nsite: engineering\nid: '7'\nkey: ENG-7\nproject: ENG\ntype: Bug\nsummary: Good one\nstatus: Open\ncreated: 2026-11-20T10:00:00Z\nupdated: 2026-11-20T10:00:00Z\n";

const FULL_REPLICA: &str = r#"ferry: 1
site: engineering
id: '7'
key: ENG-7
project: ENG
type: Bug
summary: 'Printer: on [fire] # really'
description: |-
  Smoke seen.
    [[[ indented ]]]
  Twice.
status: In Progress
priority: High
assignee: ann
reporter: "bob \"the\" builder"
labels:
- customer
- escalate
components:
- printers
created: 2026-11-20T10:00:00Z
updated: 2026-11-22T08:30:00Z
fields:
  Customer: ACME
  Nested: {a: [1, 2, {b: c}], d: 'it''s'}
  Severity: >
    folded
    text
comments:
- id: '1'
  author: ann
  created: 2026-11-21T10:00:00Z
  body: "Line one\nLine \\ two"
  origin:
    site: support
    id: '12'
attachments:
- id: '3'
  name: crash.log
  size: 51234
  sha256: 9f2c000000000000000000000000000000000000000000000000000000000000
  author: ann
  created: 2026-11-21T10:00:00Z
custom_keys:
  route: [a, b]
origin:
  site: support
  id: '10042'
"#;

const YAML_ALPHABET: &[&str] = &[
    " ", " ", " ", "\n", "\n", "\t", "\r", "-", "?", ":", ",", "[", "]", "{", "}", "#", "&", "*",
    "!", "|", ">", "'", "\"", "%", "@", "`", "\\", "a", "b", "k", "0", "1", ".", "é", "\u{85}",
    "\u{2028}", "\u{feff}", "\u{202e}", "\u{0}", "\u{1}",
];

const YAML_PIECES: &[&str] = &[
    "- ",
    "? ",
    ": ",
    "key: ",
    "\n  ",
    "\n    - ",
    "\n- ",
    "|\n",
    "|-\n  ",
    ">2\n   ",
    "|+ # c\n",
    "'",
    "''",
    "\"",
    "\\\"",
    "\\\n",
    "# comment\n",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2026:\n",
    "&anchor ",
    "*anchor",
    "!!str ",
    "!<tag:x,[y]> ",
    "[",
    "]",
    "{",
    "}",
    "[a, b]",
    "{a: b}",
    "fields:\n  X: ",
    "comments:\n- id: '1'\n  author: a\n  created: 2026-11-20T10:00:00Z\n  body: b\n",
    "ferry: 1\n",
    "ferry: 2\n",
    "id: 7\n",
    "created: 2026-02-30T10:00:00Z\n",
    "created: 99999-01-01T00:00:00Z\n",
    "deleted: yes\n",
    "<<: *anchor\n",
    "\u{feff}",
    "\r\n",
];

const HEADER_ALPHABET: &[&str] = &[
    "#", " ", "v", "2", "3", "g", "i", "t", "b", "u", "n", "d", "l", "e", "\n", "\n", "-", "@",
    "=", "0", "a", "f", "9", "r", "/", "\u{0}", "\u{ff}", "P", "A", "C", "K",
];

const HEADER_PIECES: &[&str] = &[
    "# v2 git bundle\n",
    "# v3 git bundle\n",
    "@object-format=sha1\n",
    "@object-format=sha256\n",
    "@filter=blob:none\n",
    "-0123456789abcdef0123456789abcdef01234567 subject\n",
    "0123456789abcdef0123456789abcdef01234567 refs/heads/support/engineering\n",
    "0123456789abcdef0123456789abcdef01234567",
    " refs/heads/a\u{202e}b\n",
    "\n",
    "\n\n",
    "PACK\u{0}\u{0}\u{0}\u{2}",
];

const QUERY_ALPHABET: &[&str] = &[
    " ", " ", "(", ")", "\"", "'", "\\", ",", "=", "!", "~", "a", "b", "Z", "0", "-", "_", ".",
    "é", "\u{202e}", "\t", "\n",
];

const QUERY_PIECES: &[&str] = &[
    "project = SUP",
    "labels = escalate",
    "status != Closed",
    "summary ~ printer",
    "priority IN (High, \"Very High\")",
    "component NOT IN (a, b)",
    "assignee IS EMPTY",
    "reporter IS NOT EMPTY",
    "\"Customer\" = ACME",
    " AND ",
    " OR ",
    "NOT ",
    "(",
    ")",
    "\"In Progress\"",
    "\"a \\\" b\"",
    "IS",
    "IN",
    "EMPTY",
];

const NAME_ALPHABET: &[&str] = &[
    "a", "Z", "0", ".", ".", " ", "/", "\\", ":", "*", "?", "\"", "<", ">", "|", "\u{0}", "\u{7}",
    "\u{85}", "é", "日", "\u{202e}", "\u{feff}", "🌀", "_", "-",
];

const NAME_PIECES: &[&str] = &[
    "CON",
    "nul",
    "LPT1",
    "com9",
    ".txt",
    ".tar.gz",
    "../",
    "..\\",
    "C:\\",
    "crash.log",
    " . ",
    "...",
    "\u{0301}",
];

fn targets() -> Vec<Target> {
    let replica_seeds = vec![
        GOOD_REPLICA.as_bytes().to_vec(),
        FULL_REPLICA.as_bytes().to_vec(),
        FULL_REPLICA
            .replace("'7'", "'8'")
            .replace("ENG-7", "ENG-8")
            .into_bytes(),
        b"ferry: 1\nsite: [\n".to_vec(),
        b"a: &a [1, 2]\nb: [*a, *a, *a]\n".to_vec(),
    ];
    vec![
        Target {
            name: "replica",
            seeds: replica_seeds.clone(),
            alphabet: YAML_ALPHABET,
            pieces: YAML_PIECES,
            check: check_replica,
        },
        Target {
            name: "yaml_depth",
            seeds: replica_seeds.into_iter().chain(deep_seeds()).collect(),
            alphabet: YAML_ALPHABET,
            pieces: YAML_PIECES,
            check: check_depth,
        },
        Target {
            name: "site_yaml",
            seeds: vec![
                b"ferry: 1\nsite: engineering\npeer: support\n".to_vec(),
                b"ferry: 1\nsite: engineering\npeer: support\nack: 0123456789abcdef0123456789abcdef01234567\n".to_vec(),
                b"{ferry: 1, site: 'a', peer: \"b\", ack: null}\n".to_vec(),
            ],
            alphabet: YAML_ALPHABET,
            pieces: YAML_PIECES,
            check: check_site_yaml,
        },
        Target {
            name: "bundle_header",
            seeds: vec![
                b"# v2 git bundle\n0123456789abcdef0123456789abcdef01234567 refs/heads/support/engineering\n\nPACK".to_vec(),
                b"# v3 git bundle\n@object-format=sha1\n-0123456789abcdef0123456789abcdef01234567 a subject\n0123456789abcdef0123456789abcdef01234567 refs/heads/a/b\n\nPACK\x00\x00\x00\x02".to_vec(),
            ],
            alphabet: HEADER_ALPHABET,
            pieces: HEADER_PIECES,
            check: check_bundle_header,
        },
        Target {
            name: "pack",
            seeds: pack_site().seeds.clone(),
            alphabet: PACK_ALPHABET,
            pieces: PACK_PIECES,
            check: check_pack,
        },
        Target {
            name: "query",
            seeds: vec![
                b"project = SUP AND labels = escalate AND status != Closed".to_vec(),
                b"(labels = a OR NOT labels = b) AND priority IN (High, \"Very High\")".to_vec(),
                b"\"Customer\" ~ \"ACME \\\"Inc\\\"\" OR assignee IS NOT EMPTY".to_vec(),
                b"".to_vec(),
            ],
            alphabet: QUERY_ALPHABET,
            pieces: QUERY_PIECES,
            check: check_query,
        },
        Target {
            name: "attachment_name",
            seeds: vec![
                b"crash.log".to_vec(),
                b"../../etc/passwd".to_vec(),
                "日本語のファイル.pdf".as_bytes().to_vec(),
                b"CON.txt".to_vec(),
            ],
            alphabet: NAME_ALPHABET,
            pieces: NAME_PIECES,
            check: check_attachment_name,
        },
    ]
}

/// Valid YAML nested around the depth limit, in every style: block (as
/// serde_yaml writes it), flow (JSON is YAML), and block with flow inside.
fn deep_seeds() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(64);
    let mut seeds = Vec::new();
    for _ in 0..24 {
        let depth = rng.usize(MAX_DEPTH - 6..MAX_DEPTH + 6);
        let value = (0..depth).fold(serde_json::json!("leaf"), |inner, _| match rng.u8(0..3) {
            0 => serde_json::json!([inner, 1]),
            1 => serde_json::json!({ "k": inner, "o": "x" }),
            _ => serde_json::json!({ "k": [inner] }),
        });
        let block = serde_yaml::to_string(&value).unwrap_or_default();
        let flow = value.to_string();
        let mixed = serde_yaml::to_string(&serde_json::json!({ "a": { "b": "FLOW" } }))
            .unwrap_or_default()
            .replace("FLOW", &flow);
        seeds.extend([block.into_bytes(), flow.into_bytes(), mixed.into_bytes()]);
    }
    seeds
}

fn check_replica(bytes: &[u8]) -> Result<(), String> {
    let parsed = Replica::parse("issues/ENG/7.yaml", bytes);
    if let Ok(replica) = parsed {
        // What parses writes back to bytes that parse to the same replica.
        let again = Replica::parse("issues/ENG/7.yaml", replica.to_yaml().as_bytes())
            .map_err(|e| format!("its own YAML does not parse back: {e}"))?;
        let mut expected = replica.clone();
        expected.normalize();
        if again != expected {
            return Err("its own YAML parses back to another replica".into());
        }
    }
    Ok(())
}

/// Nesting of a parsed value, keys included.
fn value_depth(value: &serde_yaml::Value) -> usize {
    match value {
        serde_yaml::Value::Sequence(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        serde_yaml::Value::Mapping(map) => {
            1 + map
                .iter()
                .map(|(k, v)| value_depth(k).max(value_depth(v)))
                .max()
                .unwrap_or(0)
        }
        serde_yaml::Value::Tagged(tagged) => value_depth(&tagged.value),
        _ => 0,
    }
}

/// The depth check never lets through what the parser nests deeper than the
/// limit (aliases aside: they repeat what was already counted).
fn check_depth(bytes: &[u8]) -> Result<(), String> {
    let passed = yaml_depth::check(bytes, MAX_DEPTH).is_ok();
    if passed
        && !bytes.contains(&b'*')
        && let Ok(value) = serde_yaml::from_slice::<serde_yaml::Value>(bytes)
    {
        let depth = value_depth(&value);
        if depth > MAX_DEPTH {
            return Err(format!(
                "passed the check but the parser nests it {depth} deep"
            ));
        }
    }
    Ok(())
}

fn check_site_yaml(bytes: &[u8]) -> Result<(), String> {
    let _ = SiteFile::parse(bytes);
    Ok(())
}

fn check_bundle_header(bytes: &[u8]) -> Result<(), String> {
    let mut reader = bytes;
    if let Err(e) = parse_header(&mut reader) {
        // Nothing of the header is quoted back (see parse_header).
        let message = e.to_string();
        for word in ["SECRET", "refs/heads"] {
            let in_input = bytes.windows(word.len()).any(|w| w == word.as_bytes());
            if in_input && message.contains(word) {
                return Err(format!("the error quotes the input: {message}"));
            }
        }
    }
    Ok(())
}

/// Bytes of a pack's grammar: entry headers of each type, a zlib stream's
/// start, delta instructions, continuation bits.
const PACK_ALPHABET: &[&str] = &[
    "\0", "\x01", "\x10", "\x30", "\x60", "\x70", "\x7f", "x", "\x1f", "\x0f", "\x11",
];
const PACK_PIECES: &[&str] = &[
    "PACK\0\0\0\x02",
    "\0\0\0\x7f",
    "x\x01",
    "x\x5e",
    "\x7f\x7f\x7f\x7f\x7f",
    "100644 a.yaml\0",
    "tree ",
    "parent ",
];

/// A repository standing for the receiving site, which a thin pack's deltas
/// lean on, and packs made against it: a thin one (as an incremental bundle
/// carries, with a replica changed and changed back) and a full one.
struct PackSite {
    repo: PathBuf,
    seeds: Vec<Vec<u8>>,
}

fn pack_site() -> &'static PackSite {
    static SITE: OnceLock<PackSite> = OnceLock::new();
    SITE.get_or_init(|| {
        let repo_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-pack-site");
        let _ = std::fs::remove_dir_all(&repo_dir);
        let repo = git2::Repository::init_bare(&repo_dir).unwrap();
        let who = git2::Signature::new("t", "t@example.invalid", &git2::Time::new(0, 0)).unwrap();
        let replica = |summary: &str| {
            format!(
                "ferry: 1\nsite: support\nid: '1'\nsummary: {summary}\n{}",
                "status: Open\n".repeat(20)
            )
        };
        let mut commits = Vec::new();
        for summary in ["Printer on fire", "Printer fixed", "Printer on fire"] {
            let blob = repo.blob(replica(summary).as_bytes()).unwrap();
            let mut inner = repo.treebuilder(None).unwrap();
            inner.insert("1.yaml", blob, 0o100644).unwrap();
            let inner = inner.write().unwrap();
            let mut root = repo.treebuilder(None).unwrap();
            root.insert("SUP", inner, 0o040000).unwrap();
            let tree = repo.find_tree(root.write().unwrap()).unwrap();
            let parents: Vec<git2::Commit> = commits
                .last()
                .map(|&c| repo.find_commit(c).unwrap())
                .into_iter()
                .collect();
            let parents: Vec<&git2::Commit> = parents.iter().collect();
            commits.push(
                repo.commit(None, &who, &who, summary, &tree, &parents)
                    .unwrap(),
            );
        }
        let mut thin = Vec::new();
        write_thin(&repo, commits[0], commits[2], &mut thin).unwrap();
        let mut full = git2::Buf::new();
        let mut builder = repo.packbuilder().unwrap();
        builder.insert_commit(commits[2]).unwrap();
        builder.write_buf(&mut full).unwrap();
        PackSite {
            repo: repo_dir,
            seeds: vec![thin, full.to_vec()],
        }
    })
}

/// The pack seeds are packs ferry takes, so mutations start from the inside.
#[test]
fn pack_seeds_are_taken() {
    let site = pack_site();
    let repo = git2::Repository::open_bare(&site.repo).unwrap();
    let odb = repo.odb().unwrap();
    for seed in &site.seeds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.pack");
        std::fs::write(&path, seed).unwrap();
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let limits = PackLimits::for_pack(seed.len() as u64, 1 << 30);
        index_from_peer(&odb, &mut reader, dir.path(), limits).unwrap();
    }
}

/// Indexes the input as a pack from a peer (its checksum made right, or
/// nearly every input would stop there): it must end, within the time
/// budget, in the objects or a refusal.
fn check_pack(bytes: &[u8]) -> Result<(), String> {
    let mut bytes = bytes.to_vec();
    if bytes.len() >= 20 {
        let body = bytes.len() - 20;
        let digest = sha1::Digest::finalize(<sha1::Sha1 as sha1::Digest>::new_with_prefix(
            &bytes[..body],
        ));
        bytes[body..].copy_from_slice(&digest);
    }
    let site = pack_site();
    let repo = git2::Repository::open_bare(&site.repo).map_err(|e| e.to_string())?;
    let odb = repo.odb().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("input.pack");
    std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
    let mut reader =
        std::io::BufReader::new(std::fs::File::open(&path).map_err(|e| e.to_string())?);
    let limits = PackLimits {
        object_bytes: 1 << 20,
        expanded_bytes: 16 << 20,
    };
    let _ = index_from_peer(&odb, &mut reader, dir.path(), limits);
    Ok(())
}

fn check_query(bytes: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(bytes);
    match Query::parse(&text) {
        Ok(query) => {
            let printed = query.to_string();
            let again = Query::parse(&printed)
                .map_err(|e| format!("prints as {printed:?}, which does not parse: {e}"))?;
            if again != query {
                return Err(format!("prints as {printed:?}, which means something else"));
            }
        }
        Err(e) => {
            let _ = e.render(&text);
        }
    }
    Ok(())
}

fn check_attachment_name(bytes: &[u8]) -> Result<(), String> {
    let name = String::from_utf8_lossy(bytes);
    let safe = safe_file_name(&name);
    if safe.is_empty() || safe.len() > 200 {
        return Err(format!("{safe:?}: empty or longer than 200 bytes"));
    }
    if safe.contains(['/', '\\']) || safe.chars().any(char::is_control) {
        return Err(format!("{safe:?}: a separator or a control character"));
    }
    if safe.starts_with(['.', ' ']) || safe.ends_with(['.', ' ']) {
        return Err(format!("{safe:?}: starts or ends with a dot or a space"));
    }
    if safe_file_name(&safe) != safe {
        return Err(format!("{safe:?}: not stable when made safe again"));
    }
    Ok(())
}

/// A source of inputs for one target, from a fixed seed.
struct Generator<'t> {
    rng: fastrand::Rng,
    target: &'t Target,
}

impl Generator<'_> {
    fn piece(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        match rng.u8(0..10) {
            // A run of openers, around the depth limit or far beyond it.
            0 => {
                let opener = ["[", "{a: ", "- ", "? ", "[\"x\", '", "  k:\n"][rng.usize(0..6)];
                let count = match rng.u8(0..4) {
                    0 => rng.usize(MAX_DEPTH - 4..MAX_DEPTH + 4),
                    1 => rng.usize(1..2_000),
                    _ => rng.usize(1..20),
                };
                opener.repeat(count).into_bytes()
            }
            1..=4 => self.target.pieces[rng.usize(0..self.target.pieces.len())]
                .as_bytes()
                .to_vec(),
            _ => {
                let len = rng.usize(1..8);
                (0..len)
                    .flat_map(|_| {
                        self.target.alphabet[rng.usize(0..self.target.alphabet.len())]
                            .as_bytes()
                            .to_vec()
                    })
                    .collect()
            }
        }
    }

    fn input(&mut self) -> Vec<u8> {
        match self.rng.u8(0..10) {
            0 => {
                let len = self.rng.usize(0..512);
                (0..len).map(|_| self.rng.u8(..)).collect()
            }
            1 => {
                let count = self.rng.usize(0..64);
                (0..count).flat_map(|_| self.piece()).collect()
            }
            _ => {
                let seeds = &self.target.seeds;
                let mut input = seeds[self.rng.usize(0..seeds.len())].clone();
                for _ in 0..self.rng.usize(1..5) {
                    self.mutate(&mut input);
                }
                input
            }
        }
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        let len = input.len();
        let at = self.rng.usize(0..=len);
        let end = self.rng.usize(at..=len);
        match self.rng.u8(0..9) {
            0 => {
                let piece = self.piece();
                input.splice(at..at, piece);
            }
            1 => {
                input.drain(at..end);
            }
            2 => {
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
            3 => input.truncate(at),
            4 if len > 0 => {
                let i = self.rng.usize(0..len);
                input[i] ^= 1 << self.rng.u8(0..8);
            }
            // Nest a stretch in brackets, or a line in deeper indentation.
            5 => {
                let depth = self.rng.usize(1..80);
                let (open, close) = if self.rng.bool() {
                    ("[", "]")
                } else {
                    ("{k: ", "}")
                };
                input.splice(end..end, close.repeat(depth).into_bytes());
                input.splice(at..at, open.repeat(depth).into_bytes());
            }
            6 => {
                let indent = " ".repeat(self.rng.usize(1..12));
                let text = String::from_utf8_lossy(input).into_owned();
                *input = text
                    .lines()
                    .map(|line| format!("{indent}{line}\n"))
                    .collect::<String>()
                    .into_bytes();
            }
            7 => {
                let seeds = &self.target.seeds;
                let other = &seeds[self.rng.usize(0..seeds.len())];
                let from = self.rng.usize(0..=other.len());
                input.splice(at..end, other[from..].iter().copied());
            }
            _ => {
                let piece = self.piece();
                input.splice(at..end, piece);
            }
        }
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

/// Saved inputs of `target`, replayed before the generated ones.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

/// Keeps a failing input for the next runs.
fn save(target: &str, input: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hasher);
    let dir = corpus_dir(target);
    let path = dir.join(format!("failure-{:016x}", hasher.finish()));
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(&path, input);
    }
    path
}

/// The CPU time this thread has used: what an input costs, whatever else the
/// machine is doing (wall time on a shared machine measures the neighbours).
fn cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    assert!(ok, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

fn run(target: &Target, iterations: usize, seed: u64) -> Outcome {
    let mut generator = Generator {
        rng: fastrand::Rng::with_seed(seed),
        target,
    };
    let budget = budget();
    let saved = corpus(target.name);
    let mut outcome = Outcome {
        inputs: 0,
        elapsed: Duration::ZERO,
        slowest: Duration::ZERO,
        slowest_len: 0,
        failures: Vec::new(),
    };
    let started = Instant::now();
    for i in 0..saved.len() + iterations {
        let input = match saved.get(i) {
            Some(input) => input.clone(),
            None => generator.input(),
        };
        let began = cpu_time();
        let result = catch_unwind(AssertUnwindSafe(|| (target.check)(&input)));
        let took = cpu_time().saturating_sub(began);
        outcome.inputs += 1;
        if took > outcome.slowest {
            outcome.slowest = took;
            outcome.slowest_len = input.len();
        }
        let failure = match result {
            Ok(Ok(())) if took <= budget => None,
            Ok(Ok(())) => Some(format!("took {took:?}, over the budget of {budget:?}")),
            Ok(Err(broken)) => Some(broken),
            Err(_) => Some("panicked".to_string()),
        };
        if let Some(failure) = failure {
            outcome.failures.push((input, failure));
            if outcome.failures.len() >= MAX_FAILURES {
                break;
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// Runs every target and fails listing every failing input (shortened).
fn fuzz(iterations: usize) {
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for (i, target) in targets().iter().enumerate() {
        let outcome = run(target, iterations, 0x00FE_22A0 + i as u64);
        let line = format!(
            "{:<16} {:>9} inputs in {:>8.2?}, slowest {:?} of CPU ({} bytes)",
            target.name, outcome.inputs, outcome.elapsed, outcome.slowest, outcome.slowest_len
        );
        println!("{line}");
        report.push(line);
        for (input, failure) in &outcome.failures {
            let path = save(target.name, input);
            let shown = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
            failed.push(format!(
                "{}: {failure}: {shown:?}{} (saved as {})",
                target.name,
                if input.len() > 300 { "…" } else { "" },
                path.display()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{}\n\n{}",
        report.join("\n"),
        failed.join("\n")
    );
}

/// Every `cargo test`: a few inputs per parser, so the harness keeps working.
#[test]
fn smoke() {
    fuzz(SMOKE_ITERATIONS);
}

/// The real run: `FERRY_FUZZ_ITERATIONS` inputs per parser (see the module
/// documentation for the command).
#[test]
#[ignore = "long: run with --ignored, see the module documentation"]
fn full() {
    let iterations = std::env::var("FERRY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    fuzz(iterations);
}
