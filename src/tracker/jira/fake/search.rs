//! The fake's search: the little JQL the connector sends (`project =`,
//! `labels`, `status`, `updated >= "-Nm"`, `id in`, `key in`, `cf[N] in`),
//! paged as Jira pages, Cloud's tokens and Data Center's offsets.

use super::*;

/// The strings of a JQL list `("a", "b")`, unescaped.
fn quoted_list(list: &str) -> Option<Vec<String>> {
    let inner = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some('"') => {}
            Some(_) => return None,
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '\\' => item.push(chars.next()?),
                '"' => break,
                c => item.push(c),
            }
        }
        out.push(item);
    }
}

/// The ids of an `id in (1, 2, 3)` clause.
fn id_list(clause: &str) -> Option<Vec<u64>> {
    let list = clause.trim().strip_prefix("id in (")?.strip_suffix(')')?;
    list.split(',').map(|id| id.trim().parse().ok()).collect()
}

/// Splits on ` AND ` outside parentheses and quotes.
fn split_and(jql: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let bytes = jql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && jql[i..].starts_with(" AND ") => {
                parts.push(jql[start..i].to_string());
                i += 5;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(jql[start..].to_string());
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

impl State {
    pub(super) fn search(&mut self, r: &Recorded, v3: bool) -> Reply {
        let jql = r.query.get("jql").cloned().unwrap_or_default();
        // The pages of one search see the same matches while nothing changes
        // (and, for a window relative to now, for a second).
        let kept = self.searched.take().filter(|s| {
            s.jql == jql
                && s.generation == self.generation
                && (!jql.contains("updated >=")
                    || s.at.elapsed() < std::time::Duration::from_secs(1))
        });
        let searched = match kept {
            Some(kept) => kept,
            None => match self.matching(&jql) {
                Ok(ids) => Searched {
                    jql: jql.clone(),
                    generation: self.generation,
                    at: std::time::Instant::now(),
                    ids,
                },
                Err(message) => {
                    return reply(400, &json!({"errorMessages": [message], "errors": {}}));
                }
            },
        };
        let out = self.search_page(r, v3, &searched.ids);
        self.searched = Some(searched);
        out
    }

    pub(super) fn search_page(&self, r: &Recorded, v3: bool, matching: &[u64]) -> Reply {
        let max = r.number("maxResults", 50).min(self.page);
        let start = if v3 {
            r.number("nextPageToken", 0)
        } else {
            r.number("startAt", 0)
        };
        let fields = r.query.get("fields").map_or("", String::as_str);
        let page: Vec<Value> = matching
            .iter()
            .skip(start)
            .take(max)
            .map(|id| {
                let issue = &self.issues[id];
                let mut bare = json!({"id": issue.id.to_string(), "key": issue.key,
                       "self": format!("{}{}/issue/{}", self.base, self.api(), issue.id)});
                match fields {
                    "id" => bare,
                    // A listing with only the time of the last change.
                    "updated" => {
                        bare["fields"] = json!({"updated": stamp(issue.updated)});
                        bare
                    }
                    "" | "*all" => self.render(issue),
                    // Only the fields asked for, as Jira answers.
                    listed => {
                        let mut full = self.render(issue);
                        if let Some(all) = full["fields"].as_object_mut() {
                            let wanted: BTreeSet<&str> = listed.split(',').collect();
                            all.retain(|k, _| wanted.contains(k.as_str()));
                        }
                        full
                    }
                }
            })
            .collect();
        let mut out = fixture("v3/search.json");
        let end = start + page.len();
        out["issues"] = Value::Array(page);
        if v3 {
            // The /search/jql shape: no total, a token while there is more.
            if let Some(m) = out.as_object_mut() {
                m.remove("startAt");
                m.remove("total");
                m.remove("maxResults");
                if end < matching.len() {
                    m.insert("nextPageToken".into(), json!(end.to_string()));
                }
                m.insert("isLast".into(), json!(end >= matching.len()));
            }
        } else {
            out["startAt"] = json!(start);
            out["maxResults"] = json!(max);
            out["total"] = json!(matching.len());
        }
        reply(200, &out)
    }

    /// The ids matching the JQL the connector sends: clauses joined by AND of
    /// `project =`, `labels =`, `status =`/`!=` and `updated >= "-Nm"`,
    /// parenthesised groups, and a trailing `ORDER BY`.
    pub(super) fn matching(&self, jql: &str) -> Result<Vec<u64>, String> {
        let jql = jql.split(" ORDER BY ").next().unwrap_or_default();
        let clauses = split_and(jql);
        // Jira checks the query before it looks at any issue.
        let probe = FakeIssue {
            id: 0,
            key: String::new(),
            fields: [("status".to_string(), json!({"name": ""}))]
                .into_iter()
                .collect(),
            seeded_as: None,
            seeded: None,
            comments: Vec::new(),
            attachments: Vec::new(),
            created: self.now(),
            updated: self.now(),
        };
        for clause in &clauses {
            self.clause(&probe, clause)?;
            // Jira refuses a query naming an issue it does not have (or the
            // account cannot see), in Jira's words.
            if let Some(ids) = id_list(clause) {
                for id in ids {
                    if self.find(&id.to_string()).is_none() {
                        return Err(format!(
                            "An issue with key '{id}' does not exist for field 'id'."
                        ));
                    }
                }
            }
            let keys = clause.trim().strip_prefix("key in ").and_then(quoted_list);
            for key in keys.into_iter().flatten() {
                if self.find(&key).is_none() {
                    return Err(format!(
                        "An issue with key '{key}' does not exist for field 'key'."
                    ));
                }
            }
        }
        let mut ids = Vec::new();
        // A list of ids names the candidates: no need to look at every issue.
        let named: Option<Vec<&FakeIssue>> = clauses
            .iter()
            .find_map(|c| id_list(c))
            .map(|ids| ids.iter().filter_map(|id| self.issues.get(id)).collect());
        let candidates: Vec<&FakeIssue> = match named {
            Some(named) => named,
            None => self.issues.values().collect(),
        };
        for issue in candidates
            .into_iter()
            .filter(|i| !self.hidden.contains(&i.id))
        {
            let mut all = true;
            for clause in &clauses {
                all &= self.clause(issue, clause)?;
            }
            if all {
                ids.push(issue.id);
            }
        }
        ids.sort_by_key(|id| (self.issues[id].updated, *id));
        Ok(ids)
    }

    pub(super) fn clause(&self, issue: &FakeIssue, clause: &str) -> Result<bool, String> {
        let clause = clause.trim();
        if let Some(inner) = clause.strip_prefix('(').and_then(|c| c.strip_suffix(')')) {
            let mut all = true;
            for c in split_and(inner) {
                all &= self.clause(issue, &c)?;
            }
            return Ok(all);
        }
        let unquote = |v: &str| v.trim().trim_matches('"').replace("\\\"", "\"");
        let mut words = clause.splitn(3, ' ');
        let (field, op, value) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        let fields = issue.field_map();
        let status = fields["status"]["name"].as_str().unwrap_or_default();
        if let Some(ids) = id_list(clause) {
            return Ok(ids.contains(&issue.id));
        }
        match (field, op) {
            ("project", "=") => Ok(unquote(value) == self.project),
            ("labels", "=") => Ok(fields.get("labels").is_some_and(|l| {
                l.as_array()
                    .is_some_and(|l| l.iter().any(|x| x == &json!(unquote(value))))
            })),
            ("labels", "in") => {
                let wanted = quoted_list(value)
                    .ok_or_else(|| format!("Error in the JQL Query: bad list {value}"))?;
                Ok(fields.get("labels").is_some_and(|l| {
                    l.as_array().is_some_and(|l| {
                        l.iter()
                            .any(|x| x.as_str().is_some_and(|x| wanted.iter().any(|w| w == x)))
                    })
                }))
            }
            ("key", "in") => {
                let wanted = quoted_list(value)
                    .ok_or_else(|| format!("Error in the JQL Query: bad list {value}"))?;
                Ok(wanted.contains(&issue.key))
            }
            (custom, "in") if custom.starts_with("cf[") => {
                let id = format!(
                    "customfield_{}",
                    custom.trim_start_matches("cf[").trim_end_matches(']')
                );
                let wanted = quoted_list(value)
                    .ok_or_else(|| format!("Error in the JQL Query: bad list {value}"))?;
                Ok(fields
                    .get(&id)
                    .and_then(Value::as_str)
                    .is_some_and(|v| wanted.iter().any(|w| w == v)))
            }
            ("status", "=") => Ok(status.eq_ignore_ascii_case(&unquote(value))),
            ("status", "!=") => Ok(!status.eq_ignore_ascii_case(&unquote(value))),
            ("updated", ">=") => {
                let v = unquote(value);
                let minutes: i64 = v
                    .strip_prefix('-')
                    .and_then(|m| m.strip_suffix('m'))
                    .and_then(|m| m.parse().ok())
                    .ok_or_else(|| format!("Date value '{v}' for field 'updated' is invalid."))?;
                Ok(issue.updated >= self.now() - Duration::minutes(minutes))
            }
            _ => Err(format!(
                "Error in the JQL Query: Expecting operator but got '{}'. (line 1, character 1)",
                clause.split(' ').nth(1).unwrap_or(clause)
            )),
        }
    }
}
