//! The part of a NoCloud seed (cloud-init's `cidata` volume) that maps onto uvmkit's instance
//! settings: `meta-data`'s `local-hostname` and `instance-id`, and a `#cloud-config`
//! `user-data`'s `hostname` and `ssh_authorized_keys`.
//!
//! Both files are YAML (YAML 1.2), of which this reads a strict subset: one block mapping at the
//! top level whose values are plain or quoted scalars, single-line flow sequences (`[a, b]`) or
//! block sequences of scalars (`- a`). That is what cloud-init's documentation writes for these
//! keys. Other top-level keys are skipped with everything indented below them (cloud-config
//! files carry many keys uvmkit has no use for) and reported to the caller, who logs them.
//! Anything this subset cannot read for a key it uses is an error naming the file and line,
//! never a guess.

use thiserror::Error;

/// The metadata file of a NoCloud seed.
pub const META_DATA: &str = "meta-data";

/// The user data file of a NoCloud seed.
pub const USER_DATA: &str = "user-data";

/// The first line that makes `user-data` a cloud-config file (cloud-init's "User data formats").
const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// A line of a seed file this parser cannot take.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file} line {line}: {problem}")]
pub struct NoCloudError {
    /// `meta-data` or `user-data`.
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and what is expected.
    pub problem: String,
}

/// What a seed's two files give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoCloudSeed {
    /// `user-data` `hostname`, else `meta-data` `local-hostname` (cloud-init's precedence).
    pub hostname: Option<String>,
    /// `meta-data` `instance-id`, for the log.
    pub instance_id: Option<String>,
    /// `user-data` `ssh_authorized_keys`.
    pub ssh_authorized_keys: Vec<String>,
    /// What was not used: `user-data: key users` lines for the log.
    pub ignored: Vec<String>,
}

/// Reads a seed from the text of its `meta-data` and, if present, `user-data`.
pub fn parse_seed(meta_data: &str, user_data: Option<&str>) -> Result<NoCloudSeed, NoCloudError> {
    let mut seed = NoCloudSeed::default();
    for (key, value) in parse_mapping(META_DATA, meta_data)? {
        match key.name.as_str() {
            "instance-id" => seed.instance_id = Some(value.scalar(META_DATA, key.line)?),
            "local-hostname" => seed.hostname = Some(value.scalar(META_DATA, key.line)?),
            other => seed.ignored.push(format!("{META_DATA}: key {other}")),
        }
    }
    let Some(user_data) = user_data else {
        return Ok(seed);
    };
    if user_data.lines().next().map(str::trim_end) != Some(CLOUD_CONFIG_HEADER) {
        seed.ignored.push(format!(
            "{USER_DATA}: not {CLOUD_CONFIG_HEADER} (a script or another format)"
        ));
        return Ok(seed);
    }
    for (key, value) in parse_mapping(USER_DATA, user_data)? {
        match key.name.as_str() {
            "hostname" => seed.hostname = Some(value.scalar(USER_DATA, key.line)?),
            "ssh_authorized_keys" => seed.ssh_authorized_keys = value.sequence(USER_DATA, key.line)?,
            other => seed.ignored.push(format!("{USER_DATA}: key {other}")),
        }
    }
    Ok(seed)
}

/// A top-level key and the line it is on.
struct Key {
    name: String,
    line: usize,
}

/// A top-level value as this subset reads it.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    /// A scalar on the key's line.
    Scalar(String),
    /// A flow sequence on the key's line, or a block sequence below it.
    Sequence(Vec<String>),
    /// Something this subset does not read (a nested mapping, a block scalar); fine for a key
    /// that is skipped, an error for one that is used.
    Other(&'static str),
}

impl Value {
    fn scalar(self, file: &'static str, line: usize) -> Result<String, NoCloudError> {
        match self {
            Value::Scalar(s) => Ok(s),
            Value::Sequence(_) => Err(error(file, line, "expected a single value, not a list")),
            Value::Other(what) => Err(error(
                file,
                line,
                &format!("{what} is not read here; write the value on the key's line"),
            )),
        }
    }

    fn sequence(self, file: &'static str, line: usize) -> Result<Vec<String>, NoCloudError> {
        match self {
            Value::Sequence(items) => Ok(items),
            Value::Scalar(s) if s.is_empty() => Ok(Vec::new()),
            Value::Scalar(_) => Err(error(file, line, "expected a list (`- item` lines or `[a, b]`)")),
            Value::Other(what) => Err(error(
                file,
                line,
                &format!("{what} is not read here; expected a list of `- \"item\"` lines"),
            )),
        }
    }
}

fn error(file: &'static str, line: usize, problem: &str) -> NoCloudError {
    NoCloudError {
        file,
        line,
        problem: problem.to_string(),
    }
}

/// The top-level block mapping of `text`, in order; duplicate keys are errors (YAML 1.2
/// §3.2.1.1: mapping keys are unique).
fn parse_mapping(file: &'static str, text: &str) -> Result<Vec<(Key, Value)>, NoCloudError> {
    let mut entries: Vec<(Key, Value)> = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
    while let Some((number, line)) = lines.next() {
        let content = strip_comment(line);
        if content.trim().is_empty() {
            continue;
        }
        if entries.is_empty() && content.trim_end() == "---" {
            continue;
        }
        if content.trim_end() == "..." {
            break;
        }
        if content.starts_with([' ', '\t']) {
            return Err(error(
                file,
                number,
                "indented line without a key above it; top-level lines are `key: value`",
            ));
        }
        let (name, rest) = split_key(content).ok_or_else(|| {
            error(
                file,
                number,
                "expected `key: value` (flow mappings such as JSON are not read)",
            )
        })?;
        if entries.iter().any(|(k, _)| k.name == name) {
            return Err(error(file, number, &format!("key {name} is given twice")));
        }
        // The lines indented below the key belong to its value.
        let mut below = Vec::new();
        while let Some(&(n, l)) = lines.peek() {
            let c = strip_comment(l);
            if !c.trim().is_empty() && !c.starts_with([' ', '\t']) {
                break;
            }
            if !c.trim().is_empty() {
                below.push((n, l));
            }
            lines.next();
        }
        let rest = rest.trim();
        let value = if rest.is_empty() {
            block_value(file, &below)?
        } else if rest.starts_with(['|', '>']) {
            Value::Other("a block scalar (| or >)")
        } else if !below.is_empty() {
            Value::Other("a value continued on the next lines")
        } else if rest.starts_with('[') {
            Value::Sequence(flow_sequence(rest).map_err(|why| error(file, number, &why))?)
        } else if rest.starts_with('{') {
            Value::Other("a flow mapping ({...})")
        } else {
            Value::Scalar(scalar(rest).map_err(|why| error(file, number, &why))?)
        };
        entries.push((Key { name, line: number }, value));
    }
    Ok(entries)
}

/// The value of a key with nothing after its colon: a block sequence of scalars, a nested
/// mapping (not read) or nothing (an empty value).
fn block_value(file: &'static str, below: &[(usize, &str)]) -> Result<Value, NoCloudError> {
    let Some(&(_, first)) = below.first() else {
        return Ok(Value::Scalar(String::new()));
    };
    let indent = first.len() - first.trim_start_matches(' ').len();
    if !strip_comment(first).trim_start().starts_with('-') {
        return Ok(Value::Other("a nested mapping"));
    }
    let mut items = Vec::new();
    for &(number, line) in below {
        let content = strip_comment(line);
        let here = content.len() - content.trim_start_matches(' ').len();
        let trimmed = content.trim();
        if content.trim_start_matches(' ').starts_with('\t') {
            return Err(error(file, number, "tabs cannot indent YAML; use spaces"));
        }
        let item = match trimmed.strip_prefix('-') {
            Some(rest) if here == indent && (rest.is_empty() || rest.starts_with(' ')) => rest.trim(),
            _ => return Ok(Value::Other("a list of lists or mappings")),
        };
        if item.starts_with(['[', '{', '|', '>']) || split_key(item).is_some() && !item.starts_with(['"', '\'']) {
            return Ok(Value::Other("a list of lists or mappings"));
        }
        items.push(scalar(item).map_err(|why| error(file, number, &why))?);
    }
    Ok(Value::Sequence(items))
}

/// `key` and the rest of a `key: value` line; the key is plain or quoted.
fn split_key(content: &str) -> Option<(String, &str)> {
    if let Some(quote) = content.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = content[1..].find(quote)? + 1;
        let rest = content[end + 1..].strip_prefix(':')?;
        return (rest.is_empty() || rest.starts_with(' ')).then(|| (content[1..end].to_string(), rest));
    }
    let colon = content
        .char_indices()
        .find(|&(i, c)| c == ':' && content[i + 1..].chars().next().is_none_or(|n| n == ' '))?
        .0;
    let key = content[..colon].trim_end();
    let plain = !key.is_empty() && !key.starts_with(['-', '[', '{', '#', '&', '*', '!', '|', '>', '%', '@', '`']);
    plain.then(|| (key.to_string(), &content[colon + 1..]))
}

/// `line` without a trailing comment: `#` at the start or after whitespace, outside quotes
/// (YAML 1.2 §6.6).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && (previous == ' ' || previous == '\t') => return &line[..i],
            None if (c == '"' || c == '\'') && (previous == ' ' || previous == '[' || previous == ',' || i == 0) => {
                quote = Some(c)
            }
            None => {}
        }
        previous = c;
    }
    line
}

/// A plain, single-quoted or double-quoted scalar, already stripped of its comment.
fn scalar(text: &str) -> Result<String, String> {
    let text = text.trim();
    if let Some(body) = text.strip_prefix('\'') {
        // YAML 1.2 §7.3.2: '' stands for one quote; no other escapes.
        let mut value = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    value.push('\'');
                    continue;
                }
                return match chars.collect::<String>().trim() {
                    "" => Ok(value),
                    after => Err(format!("unexpected {after:?} after the closing quote")),
                };
            }
            value.push(c);
        }
        return Err("the single-quoted value has no closing quote on this line".into());
    }
    if let Some(body) = text.strip_prefix('"') {
        // YAML 1.2 §7.3.1 escapes, the common ones.
        let mut value = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    return match chars.collect::<String>().trim() {
                        "" => Ok(value),
                        after => Err(format!("unexpected {after:?} after the closing quote")),
                    };
                }
                '\\' => value.push(match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('/') => '/',
                    Some(' ') => ' ',
                    other => {
                        return Err(format!(
                            "the escape \\{} is not read here; write the character itself",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                }),
                c => value.push(c),
            }
        }
        return Err("the double-quoted value has no closing quote on this line".into());
    }
    if text.starts_with(['&', '*', '!', '%', '@', '`', '{', '[', ']', '}', '|', '>']) {
        return Err(format!("{text:?} starts with a YAML indicator; quote the value"));
    }
    Ok(text.to_string())
}

/// A flow sequence on one line, `[a, "b c", 'd']`, of scalars.
fn flow_sequence(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.trim_end().strip_suffix(']'))
        .ok_or("the list [...] must end on the same line")?;
    let mut items = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let end = if rest.starts_with(['"', '\'']) {
            let quote = rest.as_bytes()[0] as char;
            let mut i = 1;
            let bytes = rest.as_bytes();
            loop {
                match bytes.get(i) {
                    None => return Err("a quoted list item has no closing quote".into()),
                    Some(b'\\') if quote == '"' => i += 2,
                    Some(&b) if b as char == quote => {
                        if quote == '\'' && bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break i + 1;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        let item = &rest[..end];
        if item.contains(['[', ']', '{', '}']) && !item.starts_with(['"', '\'']) {
            return Err("nested lists and mappings are not read here".into());
        }
        items.push(scalar(item)?);
        rest = rest[end..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected a comma before {rest:?}"));
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm6 user@laptop";

    #[test]
    fn meta_data_and_cloud_config_give_hostname_and_keys() {
        let meta = "instance-id: iid-local01\nlocal-hostname: cloudimg # the name\n";
        let user = format!(
            "#cloud-config\n# comment\nhostname: vm-7\npackage_update: true\nusers:\n  - name: ubuntu\n    \
             sudo: ALL=(ALL) NOPASSWD:ALL\nssh_authorized_keys:\n  - {KEY}\n  - \"ecdsa-sha2-nistp256 AAAAE2VjZHNh x # y\"\n\
             runcmd:\n  - [ls, -l, /]\nwrite_files:\n  - content: |\n      hello\n    path: /x\n"
        );
        let seed = parse_seed(meta, Some(&user)).unwrap();
        assert_eq!(seed.hostname.as_deref(), Some("vm-7"));
        assert_eq!(seed.instance_id.as_deref(), Some("iid-local01"));
        assert_eq!(
            seed.ssh_authorized_keys,
            vec![KEY.to_string(), "ecdsa-sha2-nistp256 AAAAE2VjZHNh x # y".to_string()]
        );
        assert_eq!(
            seed.ignored,
            [
                "user-data: key package_update",
                "user-data: key users",
                "user-data: key runcmd",
                "user-data: key write_files"
            ]
        );
    }

    #[test]
    fn meta_data_alone_and_other_user_data_formats() {
        let seed = parse_seed("---\nlocal-hostname: 'db-1'\ninstance-id: \"i-1\"\n", None).unwrap();
        assert_eq!(seed.hostname.as_deref(), Some("db-1"));
        assert_eq!(seed.instance_id.as_deref(), Some("i-1"));
        let seed = parse_seed("local-hostname: a\n", Some("#!/bin/sh\necho hi\n")).unwrap();
        assert_eq!(seed.hostname.as_deref(), Some("a"));
        assert_eq!(
            seed.ignored,
            ["user-data: not #cloud-config (a script or another format)"]
        );
        // A flow list, quotes with their escapes, an empty file.
        let user = format!("#cloud-config\nssh_authorized_keys: [\"{KEY}\", 'it''s']\n");
        let seed = parse_seed("", Some(&user)).unwrap();
        assert_eq!(seed.ssh_authorized_keys, vec![KEY.to_string(), "it's".to_string()]);
        assert_eq!(parse_seed("", None).unwrap(), NoCloudSeed::default());
    }

    #[test]
    fn what_the_subset_cannot_read_is_an_error_naming_the_line() {
        for (meta, user, says) in [
            (
                "local-hostname: a\nlocal-hostname: b\n",
                None,
                "meta-data line 2: key local-hostname is given twice",
            ),
            (
                "{\"instance-id\": \"x\"}\n",
                None,
                "meta-data line 1: expected `key: value`",
            ),
            ("  indented: x\n", None, "meta-data line 1: indented line"),
            ("local-hostname: |\n  a\n", None, "meta-data line 1: a block scalar"),
            (
                "local-hostname: \"open\n",
                None,
                "meta-data line 1: the double-quoted value has no closing quote",
            ),
            (
                "",
                Some("#cloud-config\nhostname: [a]\n"),
                "user-data line 2: expected a single value",
            ),
            (
                "",
                Some("#cloud-config\nssh_authorized_keys: one\n"),
                "user-data line 2: expected a list",
            ),
            (
                "",
                Some("#cloud-config\n\nssh_authorized_keys:\n  - name: x\n"),
                "user-data line 3: a list of lists or mappings",
            ),
            (
                "",
                Some("#cloud-config\nhostname: *ref\n"),
                "user-data line 2: \"*ref\" starts with a YAML indicator",
            ),
            (
                "",
                Some("#cloud-config\nssh_authorized_keys: [a, b\n"),
                "user-data line 2: the list [...] must end",
            ),
        ] {
            let err = parse_seed(meta, user).unwrap_err().to_string();
            assert!(err.starts_with(says), "{meta:?} {user:?}: {err}");
        }
    }
}
