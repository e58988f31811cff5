//! Reading issues from Jira's answers: fields, comments (embedded in a
//! search hit, or from the comment endpoint) and attachments.

use super::*;

impl JiraTracker {
    /// One issue from its JSON (an issue GET or a search hit) with its comments.
    pub(super) fn complete(&self, raw: &Value) -> Result<Issue, TrackerError> {
        let mut issue = self.parse_issue(raw)?;
        issue.comments = match self.embedded_comments(raw)? {
            Some(comments) => comments,
            None => self.comments(&issue.id, &issue.key)?,
        };
        self.fill_related(std::slice::from_mut(&mut issue))?;
        Ok(issue)
    }

    /// [`JiraTracker::complete`] for many search hits: the comment lists that
    /// must be read on their own are read side by side, `concurrency` at a
    /// time, since each costs a round trip and not Jira's work.
    pub(super) fn complete_all(&self, raws: &[Value]) -> Result<Vec<Issue>, TrackerError> {
        let mut issues = Vec::with_capacity(raws.len());
        let mut pending = Vec::new();
        for raw in raws {
            let mut issue = self.parse_issue(raw)?;
            match self.embedded_comments(raw)? {
                Some(comments) => issue.comments = comments,
                None => pending.push(issues.len()),
            }
            issues.push(issue);
        }
        let wanted: Vec<(String, String)> = pending
            .iter()
            .map(|&i| (issues[i].id.clone(), issues[i].key.clone()))
            .collect();
        let read = self.side_by_side(&wanted, |(id, key)| self.comments(id, key));
        for (&i, comments) in pending.iter().zip(read) {
            issues[i].comments = comments?;
        }
        self.fill_related(&mut issues)?;
        Ok(issues)
    }

    /// The comments an issue GET or search hit carries in its `comment` field,
    /// when they are all of them and none was posted by ferry's account. A
    /// request per issue for its comments would bound a first export by round
    /// trips; but embedded comments come without their properties, and ferry's
    /// origin marker and the peer author are a property of the comments ferry
    /// posted (all as its own account), so those issues' comments are read
    /// from the comment endpoint instead (`None`), as are truncated lists.
    pub(super) fn embedded_comments(
        &self,
        raw: &Value,
    ) -> Result<Option<Vec<Comment>>, TrackerError> {
        let embedded = &raw["fields"]["comment"];
        let Some(list) = embedded["comments"].as_array() else {
            return Ok(None);
        };
        let total = embedded["total"]
            .as_u64()
            .map_or(list.len(), |t| t as usize);
        if total > list.len() {
            return Ok(None);
        }
        let me = self.me()?;
        if list
            .iter()
            .any(|c| self.user_name(&c["author"]).as_deref() == Some(me))
        {
            return Ok(None);
        }
        list.iter()
            .map(|c| self.parse_comment(c))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    pub(super) fn parse_issue(&self, raw: &Value) -> Result<Issue, TrackerError> {
        let f = &raw["fields"];
        let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
        let mut labels = Vec::new();
        let mut origin = None;
        for label in f["labels"].as_array().into_iter().flatten() {
            let Some(label) = label.as_str() else {
                continue;
            };
            match parse_origin_label(label) {
                Some(o) => origin = Some(o),
                None => labels.push(label.to_string()),
            }
        }
        let mut fields = BTreeMap::new();
        for (field, def) in self.field_defs()? {
            let value = read_field(&f[&def.id], self);
            if !value.is_null() {
                fields.insert(field.clone(), value);
            }
        }
        let id = string_id(&raw["id"]);
        let (links, parent, subtasks) = relations::read(f, self.epic_field()?);
        let issue = Issue {
            resolution: name(&f["resolution"]),
            key: raw["key"].as_str().unwrap_or_default().to_string(),
            project: f["project"]["key"].as_str().unwrap_or_default().to_string(),
            issue_type: name(&f["issuetype"]).unwrap_or_default(),
            summary: f["summary"].as_str().unwrap_or_default().to_string(),
            description: self.text_of(&f["description"]),
            status: name(&f["status"]).unwrap_or_default(),
            priority: name(&f["priority"]),
            assignee: self.user_name(&f["assignee"]),
            reporter: self.user_name(&f["reporter"]),
            labels,
            components: f["components"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(name)
                .collect(),
            created: jira_time(&f["created"], &id)?,
            updated: jira_time(&f["updated"], &id)?,
            fields,
            comments: Vec::new(),
            attachments: f["attachment"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| self.parse_attachment(a))
                .collect::<Result<_, _>>()?,
            links,
            parent,
            subtasks,
            origin,
            deleted: false,
            id,
        };
        Ok(issue)
    }

    pub(super) fn parse_attachment(&self, a: &Value) -> Result<Attachment, TrackerError> {
        let mut id = string_id(&a["id"]);
        if id.is_empty() {
            // Some Server versions send only `self` (`…/attachment/10000`).
            id = a["self"]
                .as_str()
                .and_then(|s| s.rsplit('/').next())
                .unwrap_or_default()
                .to_string();
        }
        Ok(Attachment {
            name: a["filename"].as_str().unwrap_or_default().to_string(),
            size: a["size"].as_u64().unwrap_or(0),
            // Jira does not know content hashes; the engine computes them.
            sha256: String::new(),
            author: self.user_name(&a["author"]),
            created: jira_time(&a["created"], &id)?,
            id,
        })
    }

    /// All comments of issue `id` (`name` for messages), with their properties.
    pub(super) fn comments(&self, id: &str, name: &str) -> Result<Vec<Comment>, TrackerError> {
        let mut comments = Vec::new();
        let mut start = 0usize;
        loop {
            let at = start.to_string();
            let page = self
                .get_json(
                    &format!("/issue/{id}/comment"),
                    &[
                        ("startAt", &at),
                        ("maxResults", "100"),
                        ("expand", "properties"),
                    ],
                )
                .map_err(|e| issue_error(e, name))?;
            let items = page["comments"].as_array().cloned().unwrap_or_default();
            for c in &items {
                comments.push(self.parse_comment(c)?);
            }
            start += items.len();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            if items.is_empty() || start >= total {
                break;
            }
        }
        Ok(comments)
    }

    pub(super) fn parse_comment(&self, c: &Value) -> Result<Comment, TrackerError> {
        let id = string_id(&c["id"]);
        let property = |key: &str| {
            c["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["key"] == key)
                .map(|p| &p["value"])
        };
        let ferry = property(COMMENT_PROPERTY);
        let internal = c.get("visibility").is_some_and(|v| !v.is_null())
            || c["jsdPublic"] == Value::Bool(false)
            || property(SD_PROPERTY).is_some_and(|v| v["internal"] == Value::Bool(true));
        let mut body = self.text_of(&c["body"]).unwrap_or_default();
        let mut author = self.user_name(&c["author"]).unwrap_or_default();
        if let Some(by) = ferry.and_then(|p| p["author"].as_str()) {
            if let Some(rest) = body.strip_prefix(&attribution(by)) {
                body = rest.to_string();
            }
            author = by.to_string();
        }
        let origin = ferry.and_then(|p| serde_json::from_value(p["origin"].clone()).ok());
        Ok(Comment {
            author,
            created: jira_time(&c["created"], &id)?,
            body,
            internal,
            origin,
            id,
        })
    }
}
