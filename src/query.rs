//! Trigger queries: which local issues a connection starts sharing.
//!
//! A connection names its issues with a small JQL-like language, for example
//! `project = SUP AND labels = escalate AND status != Closed`. JQL is what people
//! already write for Jira (whose connector passes the text straight through), so
//! ferry evaluates the same shape of query itself for every other tracker.
//! docs/query.md is the user's reference; in short:
//!
//! ```text
//! query     := ε | or                        (the empty query matches everything)
//! or        := and ("OR" and)*
//! and       := not ("AND" not)*              (so NOT binds tighter than AND, AND than OR)
//! not       := "NOT" not | "(" or ")" | condition
//! condition := field ( "=" value | "!=" value | "~" value
//!                    | "IN" list | "NOT" "IN" list | "IS" "EMPTY" | "IS" "NOT" "EMPTY" )
//! list      := "(" value ("," value)* ")"
//! field     := word | string                 (unknown words and all strings are custom fields)
//! value     := word | string                 (a keyword must be quoted to be a value)
//! ```
//!
//! Keywords and built-in field names are case-insensitive, and so are value
//! comparisons, as in Jira: people type `status = open` and mean `Open`.
//!
//! The lexer and the recursive-descent parser are written by hand rather than
//! generated: the grammar is tiny, and a hand-written parser can point at the exact
//! column of a mistake with a message that says how to fix it. A query lives in a
//! config file that a person edits, so those messages are most of the value.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::model::{FieldValue, Issue};

/// A parsed trigger query.
///
/// Equal queries mean the same thing, and [`Display`](fmt::Display) writes the
/// canonical text (upper-case keywords, canonical field names, minimal quoting and
/// parentheses), which parses back to an equal `Query`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `None` is the empty query, which matches every issue.
    expr: Option<Expr>,
}

/// A query that does not parse, with the position of the mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct QueryError {
    /// 1-based column (in characters) of the mistake.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl QueryError {
    fn new(column: usize, message: impl Into<String>) -> Self {
        QueryError {
            column,
            message: message.into(),
        }
    }

    /// Shows the error under the query it came from, with a `^` at the column, so a
    /// person sees where the mistake is without counting characters:
    ///
    /// ```text
    /// status = Open AND
    ///                  ^ at column 18: expected a field name after 'AND' but the query ends
    /// ```
    ///
    /// Line breaks and tabs in the query are shown as spaces to keep the caret
    /// aligned (each is one column).
    pub fn render(&self, query: &str) -> String {
        let line: String = query
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let pad = " ".repeat(self.column.saturating_sub(1));
        format!("{}\n{pad}^ {self}", line.trim_end())
    }
}

/// Deepest nesting of parentheses and `NOT`s accepted: keeps the recursive parser,
/// matcher and printer far away from the stack limit whatever a config file holds.
const MAX_DEPTH: usize = 64;

/// Words with a meaning in the grammar; as values or field names they must be quoted.
const KEYWORDS: [&str; 6] = ["AND", "OR", "NOT", "IN", "IS", "EMPTY"];

/// Prefix that forces a bare word to name a custom field (`fields.status`).
const CUSTOM_PREFIX: &str = "fields.";

/// The parsed form of a non-empty query.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Two or more alternatives; never directly holds another `Or`.
    Or(Vec<Expr>),
    /// Two or more conditions; never directly holds another `And`.
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cond(Field, Op),
}

/// What a condition looks at: a built-in issue attribute or a custom field.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Project,
    Key,
    Id,
    Type,
    Summary,
    Description,
    Status,
    Priority,
    Assignee,
    Reporter,
    Labels,
    Components,
    /// A key of [`Issue::fields`].
    Custom(String),
}

/// What a condition tests on a field's values; the strings are the values as
/// written (comparisons ignore case when matching, not when parsing).
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    Ne(String),
    Contains(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    IsEmpty,
    IsNotEmpty,
}

/// Builds the operator of a comparison (`=`, `!=`, `~`) from its value.
type MakeOp = fn(String) -> Op;

impl Query {
    /// Parses a query; the empty (or whitespace-only) query matches everything.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let mut parser = Parser {
            tokens: lex(text)?,
            pos: 0,
            depth: 0,
        };
        if parser.peek().tok == Tok::End {
            return Ok(Query { expr: None });
        }
        let expr = parser.or()?;
        let token = parser.peek();
        match &token.tok {
            Tok::End => Ok(Query { expr: Some(expr) }),
            Tok::RParen => Err(QueryError::new(
                token.column,
                "this ')' closes nothing: there is no '(' before it",
            )),
            _ => Err(QueryError::new(
                token.column,
                format!(
                    "expected AND or OR after the condition but found {}; \
                     quote values that contain spaces, like \"In Progress\"",
                    token.tok
                ),
            )),
        }
    }

    /// Whether `issue` matches.
    pub fn matches(&self, issue: &Issue) -> bool {
        self.expr.as_ref().is_none_or(|e| e.matches(issue))
    }

    /// Whether this is the empty query, which matches every issue (callers can
    /// skip filtering, or a connector can skip translating it).
    pub fn is_match_all(&self) -> bool {
        self.expr.is_none()
    }
}

impl FromStr for Query {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Query::parse(text)
    }
}

// ---------------------------------------------------------------------------
// Matching

impl Expr {
    fn matches(&self, issue: &Issue) -> bool {
        match self {
            Expr::Or(items) => items.iter().any(|e| e.matches(issue)),
            Expr::And(items) => items.iter().all(|e| e.matches(issue)),
            Expr::Not(inner) => !inner.matches(issue),
            Expr::Cond(field, op) => op.holds(&field.values(issue)),
        }
    }
}

impl Field {
    /// The field's value(s) as text. A single value is a one-element list and a
    /// missing one an empty list, so every operator has one definition for all
    /// fields: `=` is "some value equals", which on a list means "contains".
    fn values<'a>(&self, issue: &'a Issue) -> Vec<Cow<'a, str>> {
        let one = |s: &'a String| vec![Cow::Borrowed(s.as_str())];
        let optional =
            |s: &'a Option<String>| s.iter().map(|s| Cow::Borrowed(s.as_str())).collect();
        let list = |l: &'a Vec<String>| l.iter().map(|s| Cow::Borrowed(s.as_str())).collect();
        match self {
            Field::Project => one(&issue.project),
            Field::Key => one(&issue.key),
            Field::Id => one(&issue.id),
            Field::Type => one(&issue.issue_type),
            Field::Summary => one(&issue.summary),
            Field::Description => optional(&issue.description),
            Field::Status => one(&issue.status),
            Field::Priority => optional(&issue.priority),
            Field::Assignee => optional(&issue.assignee),
            Field::Reporter => optional(&issue.reporter),
            Field::Labels => list(&issue.labels),
            Field::Components => list(&issue.components),
            Field::Custom(name) => custom_field(issue, name).map_or_else(Vec::new, json_values),
        }
    }
}

/// Looks a custom field up by its exact name, then case-insensitively: people
/// write field names the way they write keywords, and the exact match keeps two
/// fields that differ only in case apart.
fn custom_field<'a>(issue: &'a Issue, name: &str) -> Option<&'a FieldValue> {
    issue.fields.get(name).or_else(|| {
        issue
            .fields
            .iter()
            .find(|(key, _)| eq_ignore_case(key, name))
            .map(|(_, value)| value)
    })
}

/// A custom field's value(s) as text: strings as they are, numbers and booleans
/// in their JSON form (`3`, `true`), an array element by element, null as missing.
fn json_values(value: &FieldValue) -> Vec<Cow<'_, str>> {
    match value {
        FieldValue::Array(items) => items.iter().filter_map(json_text).collect(),
        other => json_text(other).into_iter().collect(),
    }
}

fn json_text(value: &FieldValue) -> Option<Cow<'_, str>> {
    match value {
        FieldValue::Null => None,
        FieldValue::String(s) => Some(Cow::Borrowed(s)),
        other => Some(Cow::Owned(other.to_string())),
    }
}

impl Op {
    fn holds(&self, values: &[Cow<'_, str>]) -> bool {
        let any_equal = |wanted: &str| values.iter().any(|v| eq_ignore_case(v, wanted));
        match self {
            Op::Eq(wanted) => any_equal(wanted),
            Op::Ne(wanted) => !any_equal(wanted),
            Op::Contains(part) => {
                let part = part.to_lowercase();
                values.iter().any(|v| v.to_lowercase().contains(&part))
            }
            Op::In(set) => set.iter().any(|w| any_equal(w)),
            Op::NotIn(set) => !set.iter().any(|w| any_equal(w)),
            Op::IsEmpty => values.iter().all(|v| v.is_empty()),
            Op::IsNotEmpty => !values.iter().all(|v| v.is_empty()),
        }
    }
}

/// Unicode-aware case-insensitive equality without allocating.
fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

// ---------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word: keyword, field name or value, decided by the parser.
    Word(String),
    /// A double-quoted string, escapes resolved.
    Str(String),
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Tilde,
    End,
}

/// How a token is named in error messages.
impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "'{w}'"),
            Tok::Str(s) => write_quoted(f, s),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::Comma => f.write_str("','"),
            Tok::Eq => f.write_str("'='"),
            Tok::Ne => f.write_str("'!='"),
            Tok::Tilde => f.write_str("'~'"),
            Tok::End => f.write_str("the end of the query"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based column of the token's first character.
    column: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '/')
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// Splits the text into tokens, ending with [`Tok::End`] one column past the text.
fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut chars = text.chars().enumerate().peekable();
    let mut tokens = Vec::new();
    while let Some((index, c)) = chars.next() {
        let column = index + 1;
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => Tok::Eq,
            '~' => Tok::Tilde,
            '!' if chars.next_if(|&(_, c)| c == '=').is_some() => Tok::Ne,
            '!' => {
                return Err(QueryError::new(
                    column,
                    "unexpected '!': write '!=' for \"not equal\", or NOT before a condition",
                ));
            }
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((i, '\\')) => match chars.next() {
                            Some((_, c @ ('"' | '\\'))) => s.push(c),
                            Some((_, c)) => {
                                return Err(QueryError::new(
                                    i + 1,
                                    format!(
                                        "unknown escape '\\{c}' in a string: \
                                         only \\\" and \\\\ are allowed"
                                    ),
                                ));
                            }
                            None => return Err(unterminated(column)),
                        },
                        Some((_, c)) => s.push(c),
                        None => return Err(unterminated(column)),
                    }
                }
                Tok::Str(s)
            }
            c if is_word_char(c) => {
                let mut word = String::from(c);
                while let Some((_, c)) = chars.next_if(|&(_, c)| is_word_char(c)) {
                    word.push(c);
                }
                Tok::Word(word)
            }
            '\'' => {
                return Err(QueryError::new(
                    column,
                    "strings are written in double quotes, like \"In Progress\"",
                ));
            }
            other => {
                return Err(QueryError::new(
                    column,
                    format!(
                        "unexpected character {other:?}: operators are =, !=, ~, IN, NOT IN, \
                         IS EMPTY and IS NOT EMPTY; quote values that contain other characters"
                    ),
                ));
            }
        };
        tokens.push(Token { tok, column });
    }
    tokens.push(Token {
        tok: Tok::End,
        column: text.chars().count() + 1,
    });
    Ok(tokens)
}

fn unterminated(column: usize) -> QueryError {
    QueryError::new(column, "this string never ends: add the closing '\"'")
}

// ---------------------------------------------------------------------------
// Parsing

struct Parser {
    /// Always ends with [`Tok::End`], which is never consumed.
    tokens: Vec<Token>,
    pos: usize,
    /// Current nesting of parentheses and `NOT`s, bounded by [`MAX_DEPTH`].
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if token.tok != Tok::End {
            self.pos += 1;
        }
        token
    }

    /// Consumes the next token if it is the keyword `kw` (any case).
    fn eat_keyword(&mut self, kw: &str) -> bool {
        let found = matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw));
        if found {
            self.pos += 1;
        }
        found
    }

    /// "found X" or "the query ends", to complete an "expected ... but" message.
    fn found(&self) -> String {
        match &self.peek().tok {
            Tok::End => "the query ends".to_string(),
            Tok::Word(w) if is_keyword(w) => format!("found keyword '{w}'"),
            tok => format!("found {tok}"),
        }
    }

    fn error(&self, message: String) -> QueryError {
        QueryError::new(self.peek().column, message)
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.and()?];
        while self.eat_keyword("OR") {
            items.push(self.and()?);
        }
        Ok(any_of(items))
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.not()?];
        while self.eat_keyword("AND") {
            items.push(self.not()?);
        }
        Ok(all_of(items))
    }

    fn not(&mut self) -> Result<Expr, QueryError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!(
                "the query nests parentheses and NOTs more than {MAX_DEPTH} deep"
            )));
        }
        self.depth += 1;
        let expr = self.not_inner();
        self.depth -= 1;
        expr
    }

    fn not_inner(&mut self) -> Result<Expr, QueryError> {
        if self.eat_keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        if self.peek().tok == Tok::LParen {
            let open = self.advance().column;
            let expr = self.or()?;
            if self.peek().tok != Tok::RParen {
                return Err(self.error(format!(
                    "expected AND, OR or ')' to close the '(' at column {open} but {}",
                    self.found()
                )));
            }
            self.advance();
            return Ok(expr);
        }
        let field = self.field()?;
        let op = self.op()?;
        Ok(Expr::Cond(field, op))
    }

    /// Reads a field name.
    fn field(&mut self) -> Result<Field, QueryError> {
        let field = match &self.peek().tok {
            Tok::Word(w) if !is_keyword(w) => match w.get(..CUSTOM_PREFIX.len()) {
                Some(prefix) if prefix.eq_ignore_ascii_case(CUSTOM_PREFIX) => {
                    let name = &w[CUSTOM_PREFIX.len()..];
                    if name.is_empty() {
                        return Err(self.error(format!(
                            "expected a custom field name after '{w}'; \
                             quote names that contain spaces instead: \"Customer Name\" = ACME"
                        )));
                    }
                    Field::Custom(name.to_string())
                }
                _ => Field::builtin(w).unwrap_or_else(|| Field::Custom(w.clone())),
            },
            Tok::Str(s) if s.is_empty() => {
                return Err(self.error("a field name cannot be empty".to_string()));
            }
            Tok::Str(s) => Field::Custom(s.clone()),
            _ => {
                return Err(self.error(format!(
                    "expected a field name{} but {}",
                    self.after_previous(),
                    self.found()
                )));
            }
        };
        self.advance();
        Ok(field)
    }

    /// " after 'X'" naming the previous token, or nothing at the start.
    fn after_previous(&self) -> String {
        match self.pos.checked_sub(1) {
            Some(prev) => format!(" after {}", self.tokens[prev].tok),
            None => String::new(),
        }
    }

    /// Reads the operator (and its operand) after a field name.
    fn op(&mut self) -> Result<Op, QueryError> {
        let comparison: Option<(&str, MakeOp)> = match self.peek().tok {
            Tok::Eq => Some(("'='", Op::Eq)),
            Tok::Ne => Some(("'!='", Op::Ne)),
            Tok::Tilde => Some(("'~'", Op::Contains)),
            _ => None,
        };
        if let Some((after, make)) = comparison {
            self.advance();
            return self.value(after).map(make);
        }
        if self.eat_keyword("IN") {
            return self.list("IN").map(Op::In);
        }
        if self.eat_keyword("NOT") {
            if !self.eat_keyword("IN") {
                return Err(self.error(format!(
                    "expected IN after NOT, as in NOT IN (a, b), but {}",
                    self.found()
                )));
            }
            return self.list("NOT IN").map(Op::NotIn);
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if !self.eat_keyword("EMPTY") {
                let (after, expected) = match negated {
                    true => ("IS NOT", "EMPTY"),
                    false => ("IS", "EMPTY or NOT EMPTY"),
                };
                return Err(self.error(format!(
                    "expected {expected} after {after} but {}",
                    self.found()
                )));
            }
            return Ok(if negated { Op::IsNotEmpty } else { Op::IsEmpty });
        }
        Err(self.error(format!(
            "expected an operator (=, !=, ~, IN, NOT IN, IS EMPTY or IS NOT EMPTY){} but {}",
            self.after_previous(),
            self.found()
        )))
    }

    /// Reads one value; `after` names what precedes it, for the message.
    fn value(&mut self, after: &str) -> Result<String, QueryError> {
        match &self.peek().tok {
            Tok::Word(w) if is_keyword(w) => Err(self.error(format!(
                "expected a value after {after} but found keyword '{w}'; \
                 quote it (\"{w}\") to use it as a value"
            ))),
            Tok::Word(w) | Tok::Str(w) => {
                let value = w.clone();
                self.advance();
                Ok(value)
            }
            _ => Err(self.error(format!(
                "expected a value after {after} but {}",
                self.found()
            ))),
        }
    }

    /// Reads `(v1, v2, ...)` after `IN` or `NOT IN`.
    fn list(&mut self, after: &str) -> Result<Vec<String>, QueryError> {
        if self.peek().tok != Tok::LParen {
            return Err(self.error(format!(
                "expected '(' after {after} to start a list like (Open, \"In Progress\") but {}",
                self.found()
            )));
        }
        let open = self.advance().column;
        let mut values = vec![self.value("'('")?];
        loop {
            match self.peek().tok {
                Tok::Comma => {
                    self.advance();
                    values.push(self.value("','")?);
                }
                Tok::RParen => {
                    self.advance();
                    return Ok(values);
                }
                _ => {
                    return Err(self.error(format!(
                        "expected ',' or ')' in the list opened at column {open} but {}",
                        self.found()
                    )));
                }
            }
        }
    }
}

/// An `Or` of `items`, splicing in nested ones so that `(a OR b) OR c` and
/// `a OR b OR c` are one query (and print the same).
fn any_of(items: Vec<Expr>) -> Expr {
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Expr::Or(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    single_or(flat, Expr::Or)
}

/// An `And` of `items`, flattened like [`any_of`].
fn all_of(items: Vec<Expr>) -> Expr {
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Expr::And(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    single_or(flat, Expr::And)
}

/// The only item itself, or `make` of two or more (the parser never gives none).
fn single_or(mut items: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1 {
        items.remove(0)
    } else {
        make(items)
    }
}

impl Field {
    /// The built-in field a (case-insensitive) name denotes, aliases included.
    fn builtin(name: &str) -> Option<Field> {
        let field = match name.to_ascii_lowercase().as_str() {
            "project" => Field::Project,
            "key" => Field::Key,
            "id" => Field::Id,
            "type" => Field::Type,
            "summary" => Field::Summary,
            "description" => Field::Description,
            "status" => Field::Status,
            "priority" => Field::Priority,
            "assignee" => Field::Assignee,
            "reporter" => Field::Reporter,
            "labels" | "label" => Field::Labels,
            "components" | "component" => Field::Components,
            _ => return None,
        };
        Some(field)
    }
}

// ---------------------------------------------------------------------------
// Printing

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(expr) => fmt::Display::fmt(expr, f),
            None => Ok(()),
        }
    }
}

impl Expr {
    /// Binding strength, to print parentheses only where they are needed.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(_) => 1,
            Expr::And(_) => 2,
            Expr::Not(_) | Expr::Cond(..) => 3,
        }
    }

    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, parent: u8) -> fmt::Result {
        if self.precedence() <= parent {
            write!(f, "({self})")
        } else {
            fmt::Display::fmt(self, f)
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (items, separator) = match self {
            Expr::Or(items) => (items, " OR "),
            Expr::And(items) => (items, " AND "),
            Expr::Not(inner) => {
                f.write_str("NOT ")?;
                return inner.fmt_operand(f, 2);
            }
            Expr::Cond(field, op) => return write!(f, "{field} {op}"),
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(separator)?;
            }
            item.fmt_operand(f, self.precedence())?;
        }
        Ok(())
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Field::Project => "project",
            Field::Key => "key",
            Field::Id => "id",
            Field::Type => "type",
            Field::Summary => "summary",
            Field::Description => "description",
            Field::Status => "status",
            Field::Priority => "priority",
            Field::Assignee => "assignee",
            Field::Reporter => "reporter",
            Field::Labels => "labels",
            Field::Components => "components",
            Field::Custom(name) => {
                // Bare only where a bare word would read back as this custom field.
                let prefixed = name
                    .get(..CUSTOM_PREFIX.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(CUSTOM_PREFIX));
                return if is_bare(name) && Field::builtin(name).is_none() && !prefixed {
                    f.write_str(name)
                } else {
                    write_quoted(f, name)
                };
            }
        };
        f.write_str(name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (keyword, set) = match self {
            Op::Eq(v) => return write!(f, "= {}", Value(v)),
            Op::Ne(v) => return write!(f, "!= {}", Value(v)),
            Op::Contains(v) => return write!(f, "~ {}", Value(v)),
            Op::IsEmpty => return f.write_str("IS EMPTY"),
            Op::IsNotEmpty => return f.write_str("IS NOT EMPTY"),
            Op::In(set) => ("IN", set),
            Op::NotIn(set) => ("NOT IN", set),
        };
        write!(f, "{keyword} (")?;
        for (i, v) in set.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Value(v))?;
        }
        f.write_str(")")
    }
}

/// A value printed bare when it reads back as itself, quoted otherwise.
struct Value<'a>(&'a str);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_bare(self.0) {
            f.write_str(self.0)
        } else {
            write_quoted(f, self.0)
        }
    }
}

/// Whether `s` lexes as one bare word that is not a keyword.
fn is_bare(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_word_char) && !is_keyword(s)
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn issue() -> Issue {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Issue {
            resolution: None,
            id: "10042".into(),
            key: "SUP-42".into(),
            project: "SUP".into(),
            issue_type: "Bug".into(),
            summary: "Printer on fire".into(),
            description: Some(r#"Smoke "everywhere" \ help"#.into()),
            status: "In Progress".into(),
            priority: Some("High".into()),
            assignee: None,
            reporter: Some("kevin".into()),
            labels: vec!["escalate".into(), "vip".into()],
            components: vec![],
            created: t,
            updated: t,
            fields: BTreeMap::from([
                ("Customer Name".to_string(), json!("ACME Corp")),
                ("tier".to_string(), json!(3)),
                ("urgent".to_string(), json!(true)),
                ("regions".to_string(), json!(["EU", "US", null])),
                ("none_yet".to_string(), json!([])),
                ("nothing".to_string(), json!(null)),
                ("blank".to_string(), json!("")),
                ("status".to_string(), json!("custom status")),
            ]),
            comments: vec![],
            attachments: vec![],
            links: Vec::new(),
            parent: None,
            subtasks: Vec::new(),
            origin: None,
            deleted: false,
        }
    }

    #[test]
    fn matches_table() {
        let issue = issue();
        let cases: &[(&str, bool)] = &[
            // The empty query shares everything.
            ("", true),
            (" \t\n ", true),
            // Built-in scalar fields, case-insensitive keywords, names and values.
            ("project = SUP", true),
            ("project = sup", true),
            ("PROJECT = SUP", true),
            ("project = OPS", false),
            ("project != OPS", true),
            ("project != sup", false),
            ("key = sup-42", true),
            ("id = 10042", true),
            ("type = bug", true),
            ("summary = printer", false),
            ("summary ~ FIRE", true),
            ("summary ~ water", false),
            (r#"description ~ "\"EVERYWHERE\" \\""#, true),
            (r#"status = "in progress""#, true),
            (r#"status IN (Open, "In Progress")"#, true),
            ("status in (Open, Closed)", false),
            ("status NOT IN (Open, Closed)", true),
            (r#"status not in ("IN PROGRESS")"#, false),
            ("status IS NOT EMPTY", true),
            ("priority = High", true),
            (r#"reporter = "KEVIN""#, true),
            // A missing optional value equals nothing and is empty.
            ("assignee = kevin", false),
            (r#"assignee = """#, false),
            ("assignee != kevin", true),
            ("assignee ~ k", false),
            ("assignee IN (kevin, bob)", false),
            ("assignee NOT IN (kevin, bob)", true),
            ("assignee IS EMPTY", true),
            ("assignee is not empty", false),
            // List fields: = contains, != does not contain, IN intersects.
            ("labels = escalate", true),
            ("label = VIP", true),
            ("labels = other", false),
            ("labels != escalate", false),
            ("labels != other", true),
            ("labels IN (other, vip)", true),
            ("labels NOT IN (other, vip)", false),
            ("labels NOT IN (other, more)", true),
            ("labels ~ esc", true),
            ("labels IS NOT EMPTY", true),
            ("labels IS EMPTY", false),
            ("components IS EMPTY", true),
            // Every issue has a key: a query for hand-picked issues only.
            ("key IS EMPTY", false),
            ("component = x", false),
            ("components != x", true),
            // Custom fields: bare unknown names, quoted names, the fields. prefix.
            (r#""Customer Name" = "acme corp""#, true),
            (r#""Customer Name" ~ acme"#, true),
            (r#""customer name" = "ACME CORP""#, true),
            ("tier = 3", true),
            ("TIER = 3", true),
            ("fields.tier = 3", true),
            ("FIELDS.tier IN (1, 2)", false),
            ("urgent = TRUE", true),
            ("regions = eu", true),
            ("regions != US", false),
            ("regions IN (APAC, us)", true),
            ("regions IS NOT EMPTY", true),
            ("none_yet IS EMPTY", true),
            ("none_yet != x", true),
            ("nothing IS EMPTY", true),
            ("nothing = null", false),
            ("blank IS EMPTY", true),
            ("missing = x", false),
            ("missing != x", true),
            ("missing IS EMPTY", true),
            ("missing NOT IN (a)", true),
            // A quoted or prefixed built-in name is the custom field of that name.
            (r#""status" = "custom status""#, true),
            ("fields.status ~ custom", true),
            ("status ~ custom", false),
            // Precedence: NOT > AND > OR, and parentheses override it.
            ("project = OPS AND status = Open OR labels = vip", true),
            ("labels = vip OR project = OPS AND status = Open", true),
            ("project = OPS AND (status = Open OR labels = vip)", false),
            ("(labels = vip OR project = OPS) AND status = Open", false),
            ("NOT project = SUP AND labels = other", false),
            ("NOT (project = SUP AND labels = other)", true),
            ("NOT project = OPS OR labels = other", true),
            ("NOT NOT project = SUP", true),
            (
                "not (project = OPS or (labels = vip and not tier = 3))",
                true,
            ),
            // The examples of the original design.
            (
                "project = SUP AND labels = escalate AND status != Closed",
                true,
            ),
            (r#"assignee = "kevin""#, false),
        ];
        for (text, expected) in cases {
            let query = Query::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(query.matches(&issue), *expected, "{text:?}");
            let again = Query::parse(&query.to_string()).unwrap();
            assert_eq!(again, query, "{text:?} printed as {query}");
        }
    }

    #[test]
    fn canonical_text() {
        let cases = [
            ("", ""),
            (
                r#"project = sup and label in (a,"b c" , OR2)"#,
                r#"project = sup AND labels IN (a, "b c", OR2)"#,
            ),
            (
                "not (a = 1 or b = 2) and c is not empty",
                "NOT (a = 1 OR b = 2) AND c IS NOT EMPTY",
            ),
            ("((a = 1 OR b = 2)) OR (c = 3)", "a = 1 OR b = 2 OR c = 3"),
            ("a = 1 AND (b = 2 AND c = 3)", "a = 1 AND b = 2 AND c = 3"),
            ("(a = 1 AND b = 2) OR c = 3", "a = 1 AND b = 2 OR c = 3"),
            ("a = 1 AND (b = 2 OR c = 3)", "a = 1 AND (b = 2 OR c = 3)"),
            ("NOT NOT a ~ x", "NOT NOT a ~ x"),
            (r#""status" = "and""#, r#""status" = "and""#),
            (r#""Customer Name" != """#, r#""Customer Name" != """#),
            (r#""fields.x" = 1"#, r#""fields.x" = 1"#),
            (r#"fields.x = 1"#, "x = 1"),
            (r#""x" = "1""#, "x = 1"),
            (
                r#"COMPONENT not in ("a\"b\\c")"#,
                r#"components NOT IN ("a\"b\\c")"#,
            ),
            ("assignee is empty", "assignee IS EMPTY"),
        ];
        for (text, canonical) in cases {
            let query: Query = text.parse().unwrap();
            assert_eq!(query.to_string(), canonical, "{text:?}");
        }
    }

    #[test]
    fn equivalent_spellings_are_equal() {
        let q = |t: &str| Query::parse(t).unwrap();
        assert_eq!(q("label = x"), q("LABELS = \"x\""));
        assert_eq!(q("tier = 3"), q("fields.tier = 3"));
        assert_eq!(q("tier = 3"), q("\"tier\" = 3"));
        assert_eq!(
            q("(a = 1 OR b = 2) OR c = 3"),
            q("a = 1 OR (b = 2 OR c = 3)")
        );
        assert_ne!(q("status = x"), q("\"status\" = x"));
        assert!(q("  ").is_match_all());
        assert!(!q("a = 1").is_match_all());
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let operators = "operators are =, !=, ~, IN, NOT IN, IS EMPTY and IS NOT EMPTY; \
                         quote values that contain other characters";
        let deep = format!("{}a = b{}", "(".repeat(100), ")".repeat(100));
        let cases: Vec<(&str, usize, String)> = vec![
            ("project = SUP AND status !=", 28, "expected a value after '!=' but the query ends".into()),
            ("status = Open AND", 18, "expected a field name after 'AND' but the query ends".into()),
            ("NOT", 4, "expected a field name after 'NOT' but the query ends".into()),
            ("= Open", 1, "expected a field name but found '='".into()),
            ("AND status = x", 1, "expected a field name but found keyword 'AND'".into()),
            ("a = 1 OR OR b = 2", 10, "expected a field name after 'OR' but found keyword 'OR'".into()),
            (r#"summary ~ "fire"#, 11, r#"this string never ends: add the closing '"'"#.into()),
            (r#"summary = "a\"#, 11, r#"this string never ends: add the closing '"'"#.into()),
            (r#"summary = "a\n""#, 13, r#"unknown escape '\n' in a string: only \" and \\ are allowed"#.into()),
            (
                "(status = Open OR labels = x",
                29,
                "expected AND, OR or ')' to close the '(' at column 1 but the query ends".into(),
            ),
            (
                "(status = Open labels = x)",
                16,
                "expected AND, OR or ')' to close the '(' at column 1 but found 'labels'".into(),
            ),
            ("status = Open)", 14, "this ')' closes nothing: there is no '(' before it".into()),
            (
                "status = Waiting for customer",
                18,
                "expected AND or OR after the condition but found 'for'; \
                 quote values that contain spaces, like \"In Progress\""
                    .into(),
            ),
            (
                r#"status = "a" "b""#,
                14,
                "expected AND or OR after the condition but found \"b\"; \
                 quote values that contain spaces, like \"In Progress\""
                    .into(),
            ),
            (
                "status IN Open",
                11,
                "expected '(' after IN to start a list like (Open, \"In Progress\") but found 'Open'"
                    .into(),
            ),
            (
                "status NOT IN",
                14,
                "expected '(' after NOT IN to start a list like (Open, \"In Progress\") \
                 but the query ends"
                    .into(),
            ),
            (
                "status IN (Open, Closed",
                24,
                "expected ',' or ')' in the list opened at column 11 but the query ends".into(),
            ),
            (
                "status IN (Open Closed)",
                17,
                "expected ',' or ')' in the list opened at column 11 but found 'Closed'".into(),
            ),
            ("status IN ()", 12, "expected a value after '(' but found ')'".into()),
            ("status IN (a,)", 14, "expected a value after ',' but found ')'".into()),
            (
                "status = AND labels = x",
                10,
                "expected a value after '=' but found keyword 'AND'; \
                 quote it (\"AND\") to use it as a value"
                    .into(),
            ),
            (
                "status In Progress",
                11,
                "expected '(' after IN to start a list like (Open, \"In Progress\") \
                 but found 'Progress'"
                    .into(),
            ),
            (
                "status Open",
                8,
                "expected an operator (=, !=, ~, IN, NOT IN, IS EMPTY or IS NOT EMPTY) \
                 after 'status' but found 'Open'"
                    .into(),
            ),
            (
                r#""Customer Name""#,
                16,
                "expected an operator (=, !=, ~, IN, NOT IN, IS EMPTY or IS NOT EMPTY) \
                 after \"Customer Name\" but the query ends"
                    .into(),
            ),
            ("status NOT Open", 12, "expected IN after NOT, as in NOT IN (a, b), but found 'Open'".into()),
            ("assignee IS NULL", 13, "expected EMPTY or NOT EMPTY after IS but found 'NULL'".into()),
            ("assignee IS NOT", 16, "expected EMPTY after IS NOT but the query ends".into()),
            ("status < 3", 8, format!("unexpected character '<': {operators}")),
            ("status = Open & x", 15, format!("unexpected character '&': {operators}")),
            (
                "status ! Open",
                8,
                "unexpected '!': write '!=' for \"not equal\", or NOT before a condition".into(),
            ),
            ("status = 'Open'", 10, "strings are written in double quotes, like \"In Progress\"".into()),
            (
                "fields. = x",
                1,
                "expected a custom field name after 'fields.'; \
                 quote names that contain spaces instead: \"Customer Name\" = ACME"
                    .into(),
            ),
            (r#""" = x"#, 1, "a field name cannot be empty".into()),
            // Columns count characters, not bytes.
            ("résumé = é é", 12, "expected AND or OR after the condition but found 'é'; \
                 quote values that contain spaces, like \"In Progress\""
                .into()),
            (&deep, 65, "the query nests parentheses and NOTs more than 64 deep".into()),
        ];
        for (text, column, message) in cases {
            let error = Query::parse(text).unwrap_err();
            assert_eq!(error, QueryError { column, message }, "{text:?}");
        }
    }

    #[test]
    fn error_display_and_render() {
        let text = "status = Open AND";
        let error = Query::parse(text).unwrap_err();
        assert_eq!(
            error.to_string(),
            "at column 18: expected a field name after 'AND' but the query ends"
        );
        assert_eq!(
            error.render(text),
            "status = Open AND\n                 \
             ^ at column 18: expected a field name after 'AND' but the query ends"
        );
        // Line breaks in a multi-line query do not shift the caret.
        let text = "a = 1\nAND b ! 2";
        let error = Query::parse(text).unwrap_err();
        assert_eq!(error.column, 13);
        assert!(
            error
                .render(text)
                .starts_with("a = 1 AND b ! 2\n            ^ at column 13:")
        );
    }

    /// Text of a value: a bare word, or any string quoted with escapes.
    fn value_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_./@-]{1,8}".prop_filter("keywords must be quoted", |w| !is_keyword(w)),
            any::<String>().prop_map(|s| Value(&s).to_string()),
            any::<String>()
                .prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
        ]
    }

    fn field_text() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "project",
                "KEY",
                "Id",
                "type",
                "summary",
                "description",
                "Status",
                "priority",
                "assignee",
                "reporter",
                "labels",
                "label",
                "Components",
                "component",
            ])
            .prop_map(String::from),
            "[a-z][a-z0-9_]{0,6}".prop_filter("keywords are not fields", |w| !is_keyword(w)),
            "fields\\.[A-Za-z]{1,6}",
            ".+".prop_map(|s| Field::Custom(s).to_string()),
        ]
    }

    fn condition_text() -> impl Strategy<Value = String> {
        let list = || prop::collection::vec(value_text(), 1..4).prop_map(|v| v.join(" , "));
        let op = prop_oneof![
            value_text().prop_map(|v| format!("= {v}")),
            value_text().prop_map(|v| format!("!={v}")),
            value_text().prop_map(|v| format!("~ {v}")),
            list().prop_map(|l| format!("in ({l})")),
            list().prop_map(|l| format!("NOT IN({l})")),
            Just("IS EMPTY".to_string()),
            Just("is NOT empty".to_string()),
        ];
        (field_text(), op).prop_map(|(f, o)| format!("{f} {o}"))
    }

    fn query_text() -> impl Strategy<Value = String> {
        condition_text().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(|v| v.join(" AND ")),
                prop::collection::vec(inner.clone(), 2..4).prop_map(|v| v.join(" or ")),
                inner.clone().prop_map(|e| format!("NOT {e}")),
                inner.prop_map(|e| format!("( {e})")),
            ]
        })
    }

    /// Fragments that make the parser go deep more often than random text does.
    fn token_soup() -> impl Strategy<Value = String> {
        let fragment = prop::sample::select(vec![
            "status", "labels", "\"x y\"", "fields.", "fields.a", "=", "!=", "!", "~", "IN", "not",
            "IS", "EMPTY", "AND", "or", "(", ")", ",", "Open", "\"", "\\", "'", "é", "\n",
        ]);
        prop::collection::vec(fragment, 0..16).prop_map(|v| v.join(" "))
    }

    /// Parse errors must point inside the text (or just past its end).
    fn check_any(text: &str) -> Result<(), TestCaseError> {
        match Query::parse(text) {
            Ok(query) => {
                let printed = query.to_string();
                prop_assert_eq!(Query::parse(&printed), Ok(query));
            }
            Err(error) => {
                prop_assert!((1..=text.chars().count() + 1).contains(&error.column));
                prop_assert!(!error.render(text).is_empty());
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn display_reparses_to_an_equal_query(text in query_text()) {
            let query = Query::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            let printed = query.to_string();
            let again = Query::parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed:?}: {e}")))?;
            prop_assert_eq!(&again, &query);
            prop_assert_eq!(again.to_string(), printed);
        }

        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            check_any(&text)?;
        }

        #[test]
        fn never_panics_on_query_like_text(text in token_soup()) {
            check_any(&text)?;
        }
    }
}
