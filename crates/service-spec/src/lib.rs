//! `[[services]]`: the long-running programs of an image, as a definition declares them and as
//! the init supervises them.
//!
//! One schema serves both ends: `uvmkit build` reads it from the image definition, checks it
//! with [`check_services`] and writes it (defaults filled in) into the init's configuration;
//! the init reads it back with the same types and checks it again before it starts anything.

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One supervised program.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name (`[a-z0-9][a-z0-9_.-]*`): log lines, `after` lists, `NAME.log`.
    pub name: String,
    /// The program (an absolute path inside the image) and its arguments.
    pub command: Vec<String>,
    /// Variables added to the clean environment every service starts with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Services that must have settled (be ready, or given up on) before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// How to tell that the service is ready; absent: as soon as it has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Readiness>,
    /// Seconds to wait for readiness before starting the services after this one anyway.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: u64,
    /// When the program is started again after it exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Resource limits (soft and hard), by the names in [`RLIMIT_NAMES`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rlimits: BTreeMap<String, RlimitValue>,
    /// Seconds between SIGTERM and SIGKILL at shutdown.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
    /// Directories created (mode 0755, with parents) before each start; `/run` is a fresh
    /// tmpfs at every boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<PathBuf>,
    /// Echo the output to the console as `NAME: line` (it always goes to the log file).
    #[serde(default = "default_true")]
    pub console: bool,
}

fn default_ready_timeout() -> u64 {
    120
}

fn default_stop_timeout() -> u64 {
    10
}

fn default_true() -> bool {
    true
}

/// `ready = { unix = PATH }`, `{ tcp = PORT }` or `{ http_unix = PATH }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Readiness {
    /// A unix stream socket that accepts connections.
    Unix(PathBuf),
    /// A TCP port on 127.0.0.1 that accepts connections.
    Tcp(u16),
    /// A unix stream socket that answers an HTTP request with a status line: for servers such
    /// as dockerd that listen long before they serve, where a connection alone proves little.
    #[serde(rename = "http_unix")]
    HttpUnix(PathBuf),
}

/// `restart`: when a program that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After any exit.
    Always,
    /// After a non-zero exit status or death by a signal.
    #[default]
    OnFailure,
    /// Never.
    Never,
}

/// One `rlimits` value: a number or `"unlimited"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RlimitValue {
    /// A limit.
    Value(u64),
    /// A word; only `"unlimited"` is valid.
    Word(String),
}

impl RlimitValue {
    /// The limit, `None` meaning unlimited; `Err` for a word other than `unlimited`.
    pub fn limit(&self) -> Result<Option<u64>, &str> {
        match self {
            RlimitValue::Value(value) => Ok(Some(*value)),
            RlimitValue::Word(word) if word == "unlimited" => Ok(None),
            RlimitValue::Word(word) => Err(word),
        }
    }
}

/// The `rlimits` keys a service may set (`setrlimit(2)`'s `RLIMIT_NOFILE` and so on).
pub const RLIMIT_NAMES: [&str; 5] = ["nofile", "nproc", "memlock", "core", "stack"];

/// What is wrong with one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// Its position in the list.
    pub index: usize,
    /// Its name, as given.
    pub service: String,
    /// The key at fault.
    pub key: &'static str,
    /// What is wrong and what is expected.
    pub problem: String,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[[services]] {:?}: {}: {}", self.service, self.key, self.problem)
    }
}

impl std::error::Error for ServiceError {}

/// Checks `command`: not empty, and the program an absolute path.
pub fn check_command(command: &[String]) -> Result<(), String> {
    match command.first() {
        None => Err("is empty; give the program's absolute path and its arguments".to_string()),
        Some(program) if !program.starts_with('/') => Err(format!(
            "program {program:?} is not an absolute path; services start with a minimal PATH, so \
             name the file, such as \"/usr/bin/{program}\""
        )),
        Some(_) => Ok(()),
    }
}

/// Whether `name` is a service name: `[a-z0-9][a-z0-9_.-]*`.
pub fn is_service_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks names, commands, limits, paths and the `after` graph of `services`.
pub fn check_services(services: &[ServiceSpec]) -> Result<(), ServiceError> {
    for (index, service) in services.iter().enumerate() {
        let invalid = |key: &'static str, problem: String| ServiceError {
            index,
            service: service.name.clone(),
            key,
            problem,
        };
        if !is_service_name(&service.name) {
            return Err(invalid(
                "name",
                "must match [a-z0-9][a-z0-9_.-]* (it names the log file)".to_string(),
            ));
        }
        if services[..index].iter().any(|other| other.name == service.name) {
            return Err(invalid(
                "name",
                "is used by two services; names must be unique".to_string(),
            ));
        }
        check_command(&service.command).map_err(|problem| invalid("command", problem))?;
        for (name, value) in &service.rlimits {
            if !RLIMIT_NAMES.contains(&name.as_str()) {
                return Err(invalid(
                    "rlimits",
                    format!("unknown limit {name:?}; use {}", RLIMIT_NAMES.join(", ")),
                ));
            }
            if let Err(word) = value.limit() {
                return Err(invalid(
                    "rlimits",
                    format!("{name} = {word:?} is not a limit; use a number or \"unlimited\""),
                ));
            }
        }
        if let Some(dir) = service.directories.iter().find(|d| !d.is_absolute()) {
            return Err(invalid(
                "directories",
                format!("{:?} is not an absolute path", dir.display()),
            ));
        }
        if let Some(Readiness::Unix(socket) | Readiness::HttpUnix(socket)) = &service.ready {
            if !socket.is_absolute() {
                return Err(invalid(
                    "ready",
                    format!("unix socket {:?} is not an absolute path", socket.display()),
                ));
            }
        }
        for after in &service.after {
            if after == &service.name || !services.iter().any(|other| &other.name == after) {
                return Err(invalid(
                    "after",
                    format!("names {after:?}, which is not another service of this image"),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(services) {
        let index = services.iter().position(|s| s.name == cycle[0]).unwrap_or(0);
        return Err(ServiceError {
            index,
            service: cycle[0].clone(),
            key: "after",
            problem: format!(
                "forms a cycle ({}); no service in it could ever start",
                cycle.join(" -> ")
            ),
        });
    }
    Ok(())
}

/// A cycle in the services' `after` lists, as names with the first repeated at the end.
/// Every `after` name must already be known to name a service.
fn find_cycle(services: &[ServiceSpec]) -> Option<Vec<String>> {
    // Depth-first search; `state` is 0 unvisited, 1 on the current path, 2 done.
    fn visit(i: usize, services: &[ServiceSpec], state: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<String>> {
        state[i] = 1;
        stack.push(i);
        for after in &services[i].after {
            let j = services.iter().position(|s| &s.name == after)?;
            if state[j] == 1 {
                let from = stack.iter().position(|&k| k == j).unwrap_or(0);
                let mut names: Vec<String> = stack[from..].iter().map(|&k| services[k].name.clone()).collect();
                names.push(services[j].name.clone());
                return Some(names);
            }
            if state[j] == 0 {
                if let Some(cycle) = visit(j, services, state, stack) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; services.len()];
    (0..services.len()).find_map(|i| {
        if state[i] == 0 {
            visit(i, services, &mut state, &mut Vec::new())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Tables {
        services: Vec<ServiceSpec>,
    }

    fn parse(text: &str) -> Vec<ServiceSpec> {
        toml::from_str::<Tables>(text).unwrap().services
    }

    fn problem(text: &str) -> String {
        match toml::from_str::<Tables>(text) {
            Ok(tables) => check_services(&tables.services).unwrap_err().to_string(),
            Err(err) => err.to_string(),
        }
    }

    const DOCKER: &str = r#"
[[services]]
name = "containerd"
command = ["/usr/bin/containerd"]
ready = { unix = "/run/containerd/containerd.sock" }
rlimits = { nofile = 1048576, nproc = "unlimited" }

[[services]]
name = "dockerd"
command = ["/usr/sbin/dockerd", "-H", "unix:///var/run/docker.sock"]
env = { DOCKER_CONFIG = "/x" }
after = ["containerd"]
ready = { http_unix = "/var/run/docker.sock" }
ready_timeout = 60
restart = "always"
stop_timeout = 20
directories = ["/run/docker"]
console = false

[[services]]
name = "sshd"
command = ["/usr/sbin/sshd", "-D", "-e"]
ready = { tcp = 22 }
restart = "never"
"#;

    #[test]
    fn defaults_and_every_key() {
        let services = parse(DOCKER);
        check_services(&services).unwrap();
        let [containerd, dockerd, sshd] = &services[..] else {
            panic!("{services:?}")
        };
        assert_eq!(containerd.restart, RestartPolicy::OnFailure);
        assert_eq!((containerd.ready_timeout, containerd.stop_timeout), (120, 10));
        assert!(containerd.console);
        assert_eq!(
            containerd.ready,
            Some(Readiness::Unix("/run/containerd/containerd.sock".into()))
        );
        assert_eq!(containerd.rlimits["nofile"].limit(), Ok(Some(1048576)));
        assert_eq!(containerd.rlimits["nproc"].limit(), Ok(None));
        assert_eq!(dockerd.after, ["containerd"]);
        assert_eq!(dockerd.env["DOCKER_CONFIG"], "/x");
        assert_eq!(dockerd.ready, Some(Readiness::HttpUnix("/var/run/docker.sock".into())));
        assert_eq!((dockerd.ready_timeout, dockerd.stop_timeout), (60, 20));
        assert_eq!(dockerd.restart, RestartPolicy::Always);
        assert_eq!(dockerd.directories, [PathBuf::from("/run/docker")]);
        assert!(!dockerd.console);
        assert_eq!(sshd.ready, Some(Readiness::Tcp(22)));
        assert_eq!(sshd.restart, RestartPolicy::Never);
    }

    #[test]
    fn what_the_builder_writes_the_init_reads_back_unchanged() {
        let services = parse(DOCKER);
        let written = toml::to_string(&Tables {
            services: services.clone(),
        })
        .unwrap();
        assert_eq!(parse(&written), services, "{written}");
        // Defaults are written out, so the init does not need to agree on them.
        assert!(written.contains("ready_timeout = 120"), "{written}");
    }

    #[test]
    fn mistakes_name_the_service_and_key() {
        let one = |rest: &str| format!("[[services]]\nname = \"a\"\ncommand = [\"/a\"]\n{rest}");
        let cases = [
            (
                "[[services]]\nname = \"a\"\ncommand = [\"sshd\"]\n".to_string(),
                "\"a\": command: program \"sshd\" is not an absolute path",
            ),
            (
                "[[services]]\nname = \"a\"\ncommand = []\n".to_string(),
                "\"a\": command: is empty",
            ),
            (
                "[[services]]\nname = \"A b\"\ncommand = [\"/x\"]\n".to_string(),
                "\"A b\": name: must match",
            ),
            (
                one("after = [\"b\"]\n"),
                "\"a\": after: names \"b\", which is not another service",
            ),
            (one("after = [\"a\"]\n"), "\"a\": after: names \"a\""),
            (one("rlimits = { files = 3 }\n"), "unknown limit \"files\""),
            (
                one("rlimits = { nofile = \"lots\" }\n"),
                "nofile = \"lots\" is not a limit",
            ),
            (
                one("directories = [\"run/x\"]\n"),
                "directories: \"run/x\" is not an absolute path",
            ),
            (one("ready = { unix = \"x.sock\" }\n"), "ready: unix socket \"x.sock\""),
            (one("ready = { udp = 53 }\n"), "udp"),
            (one("restart = \"sometimes\"\n"), "sometimes"),
            (one("retries = 3\n"), "retries"),
            (format!("{}{}", one(""), one("")), "is used by two services"),
        ];
        for (text, expected) in cases {
            let message = problem(&text);
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn cycles_are_refused_with_their_path() {
        let text = "[[services]]\nname = \"a\"\ncommand = [\"/a\"]\nafter = [\"c\"]\n\
                    [[services]]\nname = \"b\"\ncommand = [\"/b\"]\nafter = [\"a\"]\n\
                    [[services]]\nname = \"c\"\ncommand = [\"/c\"]\nafter = [\"b\"]\n\
                    [[services]]\nname = \"d\"\ncommand = [\"/d\"]\n";
        let err = check_services(&parse(text)).unwrap_err();
        assert_eq!((err.index, err.key), (0, "after"));
        assert!(err.problem.contains("cycle (a -> c -> b -> a)"), "{err}");
        // A diamond is not a cycle.
        let diamond = "[[services]]\nname = \"a\"\ncommand = [\"/a\"]\n\
                       [[services]]\nname = \"b\"\ncommand = [\"/b\"]\nafter = [\"a\"]\n\
                       [[services]]\nname = \"c\"\ncommand = [\"/c\"]\nafter = [\"a\"]\n\
                       [[services]]\nname = \"d\"\ncommand = [\"/d\"]\nafter = [\"b\", \"c\"]\n";
        check_services(&parse(diamond)).unwrap();
    }
}
