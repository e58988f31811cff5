//! The trees of a commit, built here from the parent's tree and the changed
//! paths.
//!
//! libgit2's `TreeUpdateBuilder` writes every tree it makes as a loose object.
//! In exchange format 2 a first export of 100 000 replicas in one project
//! makes some 10 000 trees: 10 000 files in `objects/`, past the threshold
//! at which the run's own maintenance then repacked the whole clone (a third
//! of the export's time). Built here, the trees are bytes with their ids, and
//! [`super::NewBlobs`] writes them with the blobs: into the same pack when
//! there are many, loose when few. Only trees on changed paths are read or
//! made; a subtree whose entries come out as they were keeps its id.
use std::collections::BTreeMap;

use git2::{FileMode, ObjectType, Odb, Oid};

use super::blobs::object_id;
use super::{ExchangeError, git};
use crate::pack::tree_entries;

/// A tree entry's mode as git writes it (`40000` for a tree).
const TREE_MODE: u32 = 0o040000;

/// What a path becomes: a blob or tree of this mode, or nothing (`None`
/// removes the path, file or folder).
pub(super) type Entry = Option<(Oid, FileMode)>;

/// One change below a tree: the path's components from that tree, and what
/// the path becomes.
pub(super) type Change<'a> = (Vec<&'a str>, Entry);

/// The changes of one name in a tree: of the name itself, and below it.
#[derive(Default)]
struct Named<'a> {
    here: Option<Entry>,
    below: Vec<Change<'a>>,
}

/// The tree `base` (`None`: an empty one) with `changes` made, and every new
/// tree it took, bottom up, in `made`. `None` when the result is empty (a
/// folder that goes; at the root, the empty tree).
pub(super) fn updated(
    odb: &Odb<'_>,
    base: Option<Oid>,
    changes: &[Change<'_>],
    made: &mut Vec<(Oid, Vec<u8>)>,
) -> Result<Option<Oid>, ExchangeError> {
    let mut entries: BTreeMap<Vec<u8>, (u32, Oid)> = BTreeMap::new();
    if let Some(base) = base {
        let raw = git(odb.read(base), || format!("reading tree {base}"))?;
        let parsed = git(tree_entries(raw.data(), base), || {
            format!("reading tree {base}")
        })?;
        for (mode, name, oid) in parsed {
            entries.insert(name.to_vec(), (mode, oid));
        }
    }
    // By the first component: a change of that name itself, and those below it.
    let mut by_name: BTreeMap<&str, Named<'_>> = BTreeMap::new();
    for (components, entry) in changes {
        let Some((first, rest)) = components.split_first() else {
            continue;
        };
        let named = by_name.entry(first).or_default();
        if rest.is_empty() {
            named.here = Some(*entry);
        } else {
            named.below.push((rest.to_vec(), *entry));
        }
    }
    for (name, Named { here, below }) in by_name {
        let key = name.as_bytes().to_vec();
        match here {
            Some(Some((oid, mode))) => {
                entries.insert(key.clone(), (i32::from(mode) as u32, oid));
            }
            Some(None) => {
                entries.remove(&key);
            }
            None => {}
        }
        if below.is_empty() {
            continue;
        }
        let child = entries
            .get(&key)
            .filter(|(mode, _)| *mode == TREE_MODE)
            .map(|(_, oid)| *oid);
        match (updated(odb, child, &below, made)?, child) {
            (Some(oid), _) => {
                entries.insert(key, (TREE_MODE, oid));
            }
            // Emptied: the folder goes.
            (None, Some(_)) => {
                entries.remove(&key);
            }
            // Nothing was there and nothing is: whatever is there stays.
            (None, None) => {}
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let (oid, bytes) = serialize(&entries);
    if Some(oid) != base {
        made.push((oid, bytes));
    }
    Ok(Some(oid))
}

/// A tree object's bytes (`<octal mode> <name>\0<20-byte id>` each, in git's
/// order: by name, a tree's name as if it ended in `/`) and its id.
fn serialize(entries: &BTreeMap<Vec<u8>, (u32, Oid)>) -> (Oid, Vec<u8>) {
    let mut sorted: Vec<(Vec<u8>, &[u8], u32, Oid)> = entries
        .iter()
        .map(|(name, (mode, oid))| {
            let mut key = name.clone();
            if *mode == TREE_MODE {
                key.push(b'/');
            }
            (key, name.as_slice(), *mode, *oid)
        })
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut bytes = Vec::with_capacity(sorted.len() * 40);
    for (_, name, mode, oid) in sorted {
        bytes.extend_from_slice(format!("{mode:o} ").as_bytes());
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(oid.as_bytes());
    }
    (object_id(ObjectType::Tree, &bytes), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::Repository;
    use git2::build::TreeUpdateBuilder;
    use proptest::prelude::*;

    /// Paths over a few names, so that changes meet: files replaced by
    /// folders and back, folders emptied, the same path twice.
    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop::sample::select(vec!["a", "b", "a.b", "a-c", "01", "1.yaml"]),
            1..4,
        )
        .prop_map(|parts| parts.join("/"))
    }

    fn change() -> impl Strategy<Value = (String, Option<u8>)> {
        (path(), proptest::option::of(0u8..4))
    }

    /// libgit2's builder, the oracle: the same changes on the same base.
    fn oracle(
        repo: &Repository,
        base: Oid,
        changes: &BTreeMap<String, Option<Oid>>,
    ) -> Option<Oid> {
        let base = repo.find_tree(base).unwrap();
        let mut update = TreeUpdateBuilder::new();
        for (path, entry) in changes {
            match entry {
                Some(oid) => {
                    update.upsert(path.as_str(), *oid, FileMode::Blob);
                }
                None => {
                    if base.get_path(std::path::Path::new(path)).is_ok() {
                        update.remove(path.as_str());
                    }
                }
            }
        }
        update.create_updated(repo, &base).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the base and the changes, the tree built here is the one
        /// libgit2 builds, id for id, and every tree it names is written.
        #[test]
        fn trees_match_libgit2s(
            first in proptest::collection::vec(change(), 0..12),
            second in proptest::collection::vec(change(), 0..12),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_bare(dir.path()).unwrap();
            let odb = repo.odb().unwrap();
            let blobs: Vec<Oid> = (0..4u8).map(|i| repo.blob(&[b'x', i]).unwrap()).collect();
            let empty = repo.treebuilder(None).unwrap().write().unwrap();
            let mut base = empty;
            for round in [first, second] {
                // Like Exchange::commit: the last write of a path wins, and
                // a path and one below it are not both written (a file and
                // a folder of one name).
                let mut changes: BTreeMap<String, Option<Oid>> = BTreeMap::new();
                for (path, blob) in round {
                    let clash = changes.keys().any(|p| {
                        p.starts_with(&format!("{path}/")) || path.starts_with(&format!("{p}/"))
                    });
                    if !clash {
                        changes.insert(path, blob.map(|b| blobs[usize::from(b)]));
                    }
                }
                let Some(expected) = oracle(&repo, base, &changes) else {
                    // libgit2 refuses a path below a file ("D/F conflict");
                    // here the folder replaces the file. Round over.
                    break;
                };
                let listed: Vec<Change<'_>> = changes
                    .iter()
                    .map(|(p, e)| (p.split('/').collect(), e.map(|oid| (oid, FileMode::Blob))))
                    .collect();
                let mut made = Vec::new();
                let got = updated(&odb, Some(base), &listed, &mut made).unwrap().unwrap_or(empty);
                prop_assert_eq!(got, expected);
                for (oid, bytes) in made {
                    prop_assert_eq!(odb.write(git2::ObjectType::Tree, &bytes).unwrap(), oid);
                }
                base = got;
            }
        }
    }
}
