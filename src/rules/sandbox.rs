//! The sandboxed rhai engine of a rule script, and the functions it offers
//! scripts (`map_value`, `lookup`, `comment_from`, `attributed`, bounded
//! `split`): see the module documentation of `rules` for the limits.

use super::*;

/// Builds the sandboxed engine of one script; see the module documentation.
pub(super) fn sandboxed_engine(path: &Path, tables: Arc<Map>, settings: RuleSettings) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_module_resolver(DummyModuleResolver::new())
        .disable_symbol("eval")
        .set_strict_variables(true)
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_EXPR_DEPTH / 2)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE);
    // Before every operation: the run's memory, as the allocator counted it.
    let budget = settings.budget();
    engine.on_progress(move |_| Meter::exceeded(budget).map(|over| Dynamic::from_int(over.code())));

    let script = path.display().to_string();
    let name = script.clone();
    engine.on_print(move |text| tracing::info!(script = %name, "{text}"));
    engine.on_debug(move |text, _source, pos| {
        tracing::info!(script = %script, line = pos.line(), "{text}");
    });

    register_bounded_splits(&mut engine);
    engine.register_fn("map_value", map_value);
    let table_of = Arc::clone(&tables);
    engine.register_fn(
        "lookup",
        move |table: &str, key: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            lookup(&table_of, table, &key, Dynamic::UNIT)
        },
    );
    engine.register_fn(
        "lookup",
        move |table: &str, key: Dynamic, default: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            lookup(&tables, table, &key, default)
        },
    );
    engine.register_fn(
        "comment_from",
        |c: Map| -> Result<Map, Box<EvalAltResult>> {
            let (author, body, source) = comment_parts("comment_from", &c)?;
            Ok(new_comment(author, body, source))
        },
    );
    engine.register_fn(
        "attributed",
        |c: Map, site: &str| -> Result<Map, Box<EvalAltResult>> {
            let (author, body, source) = comment_parts("attributed", &c)?;
            // A comment relayed through several sites names where it was written.
            let written_at = c
                .get("origin")
                .and_then(|o| o.read_lock::<Map>().and_then(|o| o.get("site").cloned()))
                .and_then(|s| s.into_string().ok())
                .unwrap_or_else(|| site.to_string());
            let body = format!("[{author}@{written_at}] {body}");
            Ok(new_comment(author, body.into(), source))
        },
    );
    engine
}

/// Replaces rhai's `split`, `split_rev` and `to_chars` of strings with the same
/// functions that count the pieces before making them. rhai refuses a list over
/// [`MAX_ARRAY_SIZE`] only once it is built: splitting a 15 MB description into
/// characters held about 1 GB for a moment, enough to kill the process under a
/// memory limit, since the budget is checked between operations. Registered
/// functions take precedence over rhai's packages; the results are rhai's own.
fn register_bounded_splits(engine: &mut Engine) {
    type Pieces = Result<Array, Box<EvalAltResult>>;
    /// Refuses `count` pieces over the array limit, or makes them.
    fn bounded<'a>(
        name: &str,
        count: usize,
        pieces: impl Iterator<Item = &'a str>,
    ) -> Result<Array, Box<EvalAltResult>> {
        if count > MAX_ARRAY_SIZE {
            return Err(format!(
                "{name}: the text would split into {count} pieces, over the limit of {MAX_ARRAY_SIZE} items"
            )
            .into());
        }
        Ok(pieces
            .map(|piece| Dynamic::from(piece.to_string()))
            .collect())
    }
    /// Pieces of `text` split by `delimiter`, as `str::split` makes them.
    fn count(text: &str, delimiter: &str) -> usize {
        if delimiter.is_empty() {
            text.chars().count() + 2
        } else {
            text.matches(delimiter).count() + 1
        }
    }
    /// At most `segments` (rhai: up to 1 means the whole text).
    fn segments(segments: i64) -> usize {
        usize::try_from(segments).unwrap_or(usize::MAX).max(1)
    }
    fn whole(text: &str) -> Array {
        vec![Dynamic::from(text.to_string())]
    }

    engine.register_fn("to_chars", |s: &str| -> Pieces {
        let count = s.chars().count();
        if count > MAX_ARRAY_SIZE {
            return bounded("to_chars", count, std::iter::empty());
        }
        Ok(s.chars().map(Dynamic::from).collect())
    });
    engine.register_fn("split", |s: &str| -> Pieces {
        if s.is_empty() {
            return Ok(whole(s));
        }
        bounded("split", s.split_whitespace().count(), s.split_whitespace())
    });
    engine.register_fn("split", |s: &str, d: &str| -> Pieces {
        if s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        bounded("split", count(s, d), s.split(d))
    });
    engine.register_fn("split", |s: &str, d: &str, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded("split", count(s, d).min(n), s.splitn(n, d))
    });
    engine.register_fn("split", |s: &str, d: char| -> Pieces {
        if s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        bounded("split", s.matches(d).count() + 1, s.split(d))
    });
    engine.register_fn("split", |s: &str, d: char, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded("split", (s.matches(d).count() + 1).min(n), s.splitn(n, d))
    });
    engine.register_fn("split_rev", |s: &str, d: &str| -> Pieces {
        if s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        bounded("split_rev", count(s, d), s.rsplit(d))
    });
    engine.register_fn("split_rev", |s: &str, d: &str, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || (!d.is_empty() && !s.contains(d)) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded("split_rev", count(s, d).min(n), s.rsplitn(n, d))
    });
    engine.register_fn("split_rev", |s: &str, d: char| -> Pieces {
        if s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        bounded("split_rev", s.matches(d).count() + 1, s.rsplit(d))
    });
    engine.register_fn("split_rev", |s: &str, d: char, n: i64| -> Pieces {
        if n <= 1 || s.is_empty() || !s.contains(d) {
            return Ok(whole(s));
        }
        let n = segments(n);
        bounded(
            "split_rev",
            (s.matches(d).count() + 1).min(n),
            s.rsplitn(n, d),
        )
    });
}

/// The text of a key used to look something up; `None` for `()`.
fn key_text(key: &Dynamic) -> Option<String> {
    if key.is_unit() {
        None
    } else if key.is_string() {
        key.clone().into_string().ok()
    } else {
        Some(key.to_string())
    }
}

/// `map_value(value, map, default)`.
fn map_value(value: Dynamic, map: Map, default: Dynamic) -> Dynamic {
    let Some(key) = key_text(&value) else {
        return default;
    };
    match map.get(key.as_str()) {
        Some(mapped) => mapped.clone(),
        None => {
            note_unmapped(format!("{key:?} has no mapping (map_value gave {default})"));
            default
        }
    }
}

/// `lookup(table, key[, default])`.
fn lookup(
    tables: &Map,
    table: &str,
    key: &Dynamic,
    default: Dynamic,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let Some(entries) = tables.get(table).and_then(|t| t.read_lock::<Map>()) else {
        let known: Vec<&str> = tables.keys().map(|k| k.as_str()).collect();
        return Err(format!(
            "lookup: there is no table {table:?} (a file tables/{table}.yaml); tables: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
        .into());
    };
    let Some(key) = key_text(key) else {
        return Ok(default);
    };
    Ok(match entries.get(key.as_str()) {
        Some(value) => value.clone(),
        None => {
            let got = if default.is_unit() {
                "()".to_string()
            } else {
                default.to_string()
            };
            note_unmapped(format!(
                "{key:?} is not in table {table} (lookup gave {got})"
            ));
            default
        }
    })
}

/// Author, body and id of a comment map passed to a helper.
fn comment_parts(
    helper: &str,
    c: &Map,
) -> Result<(ImmutableString, ImmutableString, ImmutableString), Box<EvalAltResult>> {
    let text = |key: &str| -> Result<ImmutableString, Box<EvalAltResult>> {
        c.get(key)
            .and_then(|v| v.clone().into_immutable_string().ok())
            .ok_or_else(|| {
                format!("{helper}: the comment has no `{key}` text; pass one of `added_comments`")
                    .into()
            })
    };
    Ok((text("author")?, text("body")?, text("id")?))
}

fn new_comment(author: ImmutableString, body: ImmutableString, source: ImmutableString) -> Map {
    let mut comment = Map::new();
    comment.insert("author".into(), author.into());
    comment.insert("body".into(), body.into());
    comment.insert("source".into(), source.into());
    comment
}
