//! Creating issues in Jira: one create, or Jira's bulk create for up to
//! `BULK` at once, then each moved to its status and given its comments.

use super::*;

impl JiraTracker {
    /// The `fields` of a create.
    pub(super) fn create_fields(
        &self,
        issue: &NewIssue,
    ) -> Result<serde_json::Map<String, Value>, TrackerError> {
        if !issue.patch.add_links.is_empty() || !issue.patch.remove_links.is_empty() {
            return Err(TrackerError::Rejected {
                issue: format!("new issue in {}", issue.project),
                message: "Jira links issues that exist: make the issue, then link it".into(),
            });
        }
        let mut fields = self.fields_json(
            &issue.patch,
            None,
            issue.origin.as_ref().map(origin_label_of),
        )?;
        fields.insert("project".into(), json!({"key": issue.project}));
        if let Some(Some(parent)) = &issue.patch.parent {
            let (field, value) = self.parent_field(None, Some(parent))?;
            fields.insert(field, value);
        }
        fields
            .entry("issuetype")
            .or_insert_with(|| json!({"name": self.config.default_type}));
        fields.entry("summary").or_insert_with(|| json!(""));
        Ok(fields)
    }

    /// Issues just made, read back by id with one search (fields and the
    /// comments embedded in it, which are all an issue this run made can have
    /// besides the ones it posted); an id the search misses (an index not yet
    /// caught up) is read on its own.
    pub(super) fn read_back(&self, ids: &[String]) -> Result<HashMap<String, Issue>, TrackerError> {
        let mut found = HashMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let jql = format!("id in ({})", ids.join(", "));
        let fields = self.read_fields()?;
        let searched = self.search_pages(&jql, &fields, |page| {
            for raw in &page {
                let mut issue = self.parse_issue(raw)?;
                issue.comments = raw["fields"]["comment"]["comments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| self.parse_comment(c))
                    .collect::<Result<_, _>>()?;
                found.insert(issue.id.clone(), issue);
            }
            Ok(())
        });
        match searched {
            Ok(()) => {}
            Err(TrackerError::Unavailable(message)) if message.starts_with("Jira refused") => {}
            Err(e) => return Err(e),
        }
        for id in ids {
            if !found.contains_key(id) {
                found.insert(id.clone(), self.existing(id)?);
            }
        }
        Ok(found)
    }

    /// [`Tracker::create_many`] for up to [`BULK`] issues: one bulk create,
    /// one search to read them back, then for each, side by side, its
    /// transition (the issues of one kind sharing a transition list) and its
    /// comments, and one more search for how they ended.
    pub(super) fn create_chunk(&self, chunk: &[NewIssueWithComments]) -> Vec<Created> {
        let failed = |e: TrackerError| Created {
            issue: Err(e),
            comments: Vec::new(),
        };
        let mut results: Vec<Option<Created>> = chunk.iter().map(|_| None).collect();
        let mut bodies = Vec::new();
        let mut sent = Vec::new();
        let mut made: Vec<(usize, String)> = Vec::new();
        for (i, item) in chunk.iter().enumerate() {
            // A parent Jira may refuse; one by one, so that it can be left out.
            if item.issue.patch.parent.is_some() {
                match self.post_create(&item.issue) {
                    Ok(id) => made.push((i, id)),
                    Err(e) => results[i] = Some(failed(e)),
                }
                continue;
            }
            match self.create_fields(&item.issue) {
                Ok(fields) => {
                    bodies.push(json!({ "fields": fields }));
                    sent.push(i);
                }
                Err(e) => results[i] = Some(failed(e)),
            }
        }
        let body = json!({ "issueUpdates": bodies });
        if !sent.is_empty() {
            match self
                .client
                .json("POST", &self.api("/issue/bulk"), &[], &Body::Json(&body))
            {
                Ok(answer) => {
                    let mut refused: HashMap<usize, String> = HashMap::new();
                    for e in answer["errors"].as_array().into_iter().flatten() {
                        let n = e["failedElementNumber"].as_u64().unwrap_or(u64::MAX) as usize;
                        refused.insert(n, client::error_message(&e["elementErrors"].to_string()));
                    }
                    let mut ids = answer["issues"].as_array().into_iter().flatten();
                    for (n, &i) in sent.iter().enumerate() {
                        match refused.remove(&n) {
                            Some(message) => {
                                results[i] = Some(failed(TrackerError::Rejected {
                                    issue: "a new issue".into(),
                                    message,
                                }));
                            }
                            None => match ids.next() {
                                Some(created) => made.push((i, string_id(&created["id"]))),
                                None => {
                                    results[i] = Some(failed(TrackerError::Unavailable(
                                        "Jira's answer to a bulk create lists fewer issues than                                          it made"
                                            .into(),
                                    )))
                                }
                            },
                        }
                    }
                }
                // Every one refused: sent one by one, for each one's reason.
                Err(Failure::Status { status: 400, .. }) => {
                    for &i in &sent {
                        match self.post_create(&chunk[i].issue) {
                            Ok(id) => made.push((i, id)),
                            Err(e) => results[i] = Some(failed(e)),
                        }
                    }
                }
                Err(e) => {
                    let e = issue_error(e, "a new issue");
                    for &i in &sent {
                        results[i] = Some(failed(copy_error(&e)));
                    }
                }
            }
        }
        // Each made issue: moved to its status, its comments posted.
        let ids: Vec<String> = made.iter().map(|(_, id)| id.clone()).collect();
        let first = match self.read_back(&ids) {
            Ok(first) => first,
            Err(e) => {
                for (i, _) in &made {
                    results[*i] = Some(failed(copy_error(&e)));
                }
                return results.into_iter().flatten().collect();
            }
        };
        let work: Vec<(usize, Issue)> = made
            .iter()
            .filter_map(|(i, id)| first.get(id).map(|issue| (*i, issue.clone())))
            .collect();
        let transitions = SharedTransitions::default();
        let done = self.side_by_side(&work, |(i, issue)| {
            let new = &chunk[*i];
            if let Some(status) = &new.issue.patch.status {
                let resolution = new
                    .issue
                    .patch
                    .resolution
                    .as_ref()
                    .and_then(Option::as_deref);
                self.transition_with(issue, status, resolution, Some(&transitions))?;
            }
            let mut comments = Vec::new();
            for comment in &new.comments {
                let posted = self.post_comment(&issue.id, &issue.key, comment);
                let stop = posted.is_err();
                comments.push(posted);
                if stop {
                    break;
                }
            }
            Ok(comments)
        });
        let changed: Vec<String> = work
            .iter()
            .filter(|(i, _)| {
                chunk[*i].issue.patch.status.is_some() || !chunk[*i].comments.is_empty()
            })
            .map(|(_, issue)| issue.id.clone())
            .collect();
        let last = self.read_back(&changed);
        for ((i, issue), comments) in work.into_iter().zip(done) {
            let created = match (comments, &last) {
                (Err(e), _) => failed(e),
                (Ok(comments), Ok(last)) => {
                    let mut stored = last.get(&issue.id).cloned().unwrap_or(issue);
                    // The posted ones as posted (with their origins), any other
                    // (an automation's) as embedded.
                    let posted: Vec<Comment> = comments
                        .iter()
                        .filter_map(|c| c.as_ref().ok())
                        .cloned()
                        .collect();
                    stored
                        .comments
                        .retain(|c| !posted.iter().any(|p| p.id == c.id));
                    stored.comments.extend(posted);
                    stored.normalize();
                    Created {
                        issue: Ok(stored),
                        comments,
                    }
                }
                (Ok(_), Err(e)) => failed(copy_error(e)),
            };
            results[i] = Some(created);
        }
        let mut out: Vec<Created> = Vec::with_capacity(chunk.len());
        for (i, created) in results.into_iter().enumerate() {
            let created = created.unwrap_or_else(|| {
                failed(TrackerError::Unavailable(format!(
                    "Jira's answer to a bulk create says nothing of issue {} of {}",
                    i + 1,
                    chunk.len()
                )))
            });
            if let (Ok(issue), Some(origin)) = (&created.issue, &chunk[i].issue.origin) {
                self.origins
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(origin_label_of(origin), Some(issue.id.clone()));
            }
            out.push(created);
        }
        let made: Vec<&Issue> = out.iter().filter_map(|c| c.issue.as_ref().ok()).collect();
        if let Err(e) = self.remember(made) {
            tracing::warn!("remembering the issues just made: {e}");
        }
        out
    }

    /// Sends one create and returns the new issue's id. One with a parent
    /// that Jira will not take as a sub-task of it is made on its own: the
    /// engine sets the parent afterwards, and where Jira refuses that too the
    /// relation waits with Jira's reason (see `relations`).
    pub(super) fn post_create(&self, issue: &NewIssue) -> Result<String, TrackerError> {
        match self.post_create_once(issue) {
            Err(TrackerError::Rejected { message, .. }) if issue.patch.parent.is_some() => {
                tracing::info!("Jira made a new issue without its parent: {message}");
                let mut alone = issue.clone();
                alone.patch.parent = None;
                self.post_create_once(&alone)
            }
            other => other,
        }
    }

    pub(super) fn post_create_once(&self, issue: &NewIssue) -> Result<String, TrackerError> {
        let body = json!({ "fields": self.create_fields(issue)? });
        let created = self
            .client
            .json("POST", &self.api("/issue"), &[], &Body::Json(&body))
            .map_err(|e| issue_error(e, "a new issue"))?;
        let id = string_id(&created["id"]);
        if let Some(origin) = &issue.origin {
            self.origins
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(origin_label_of(origin), Some(id.clone()));
        }
        Ok(id)
    }

    /// One create: the issue, moved to its status.
    pub(super) fn create_one(&self, issue: &NewIssue) -> Result<Issue, TrackerError> {
        let id = self.post_create(issue)?;
        let mut stored = self.existing(&id)?;
        if let Some(status) = &issue.patch.status {
            let resolution = issue.patch.resolution.as_ref().and_then(Option::as_deref);
            self.transition(&stored, status, resolution)?;
            stored = self.existing(&id)?;
        }
        self.remember([&stored])?;
        Ok(stored)
    }
}
