//! The environment lines `uvmkit connect` and `uvmkit env` print, per shell, as
//! `docker-machine env` did: `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` (the
//! variables the Docker CLI reads, docs.docker.com "docker" CLI reference, "Environment
//! variables"), then how to apply them and the context alternative as comments.

use std::path::Path;

/// A shell whose syntax the lines are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// bash (and any POSIX sh).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
    /// Windows PowerShell and PowerShell 7.
    PowerShell,
    /// Windows cmd.exe.
    Cmd,
}

impl Shell {
    /// The shell named `name` (`bash`, `sh`, `zsh`, `fish`, `powershell`, `pwsh`, `cmd`).
    pub fn from_name(name: &str) -> Option<Shell> {
        match name.to_ascii_lowercase().as_str() {
            "bash" | "sh" => Some(Shell::Bash),
            "zsh" => Some(Shell::Zsh),
            "fish" => Some(Shell::Fish),
            "powershell" | "pwsh" => Some(Shell::PowerShell),
            "cmd" => Some(Shell::Cmd),
            _ => None,
        }
    }

    /// The shell's name as `--shell` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
            Shell::PowerShell => "powershell",
            Shell::Cmd => "cmd",
        }
    }

    /// The user's shell when `--shell` is not given: PowerShell on Windows, else the one
    /// `$SHELL` names (fish, zsh), else bash.
    pub fn detect() -> Shell {
        if cfg!(windows) {
            return Shell::PowerShell;
        }
        let shell = std::env::var("SHELL").unwrap_or_default();
        match Path::new(&shell).file_name().and_then(|n| n.to_str()) {
            Some("fish") => Shell::Fish,
            Some("zsh") => Shell::Zsh,
            _ => Shell::Bash,
        }
    }

    /// `NAME=value` as a command of this shell, the value quoted so that spaces and quotes in
    /// paths survive.
    fn set(self, name: &str, value: &str) -> String {
        match self {
            // POSIX sh: nothing is special inside '...'; a ' ends it, so write '\''.
            Shell::Bash | Shell::Zsh => format!("export {name}='{}'", value.replace('\'', r"'\''")),
            // fish: inside '...' only \\ and \' are escapes.
            Shell::Fish => format!("set -gx {name} '{}';", value.replace('\\', r"\\").replace('\'', r"\'")),
            // PowerShell: inside '...' a ' is written twice.
            Shell::PowerShell => format!("$Env:{name} = '{}'", value.replace('\'', "''")),
            // cmd: SET "NAME=value" keeps spaces and ends at the last quote; Windows paths
            // cannot hold a '"'.
            Shell::Cmd => format!("SET \"{name}={value}\""),
        }
    }

    /// A comment line.
    fn comment(self, text: &str) -> String {
        match self {
            Shell::Cmd => format!("REM {text}"),
            _ => format!("# {text}"),
        }
    }

    /// The command that applies `uvmkit env NAME`'s output in this shell.
    fn apply_command(self, context: &str) -> String {
        match self {
            Shell::Bash => format!("eval \"$(uvmkit env {context} --shell bash)\""),
            Shell::Zsh => format!("eval \"$(uvmkit env {context} --shell zsh)\""),
            Shell::Fish => format!("uvmkit env {context} --shell fish | source"),
            Shell::PowerShell => format!("& uvmkit env {context} --shell powershell | Invoke-Expression"),
            Shell::Cmd => format!("@FOR /f \"tokens=*\" %i IN ('uvmkit env {context} --shell cmd') DO @%i"),
        }
    }
}

/// The lines that point the Docker CLI at `host` (`tcp://HOST:PORT`) with the TLS files in
/// `cert_path`, for `shell`; `context` names the Docker context holding the same.
pub fn env_lines(shell: Shell, context: &str, host: &str, cert_path: &Path) -> String {
    let cert_path = cert_path.display().to_string();
    let lines = [
        shell.set("DOCKER_HOST", host),
        shell.set("DOCKER_TLS_VERIFY", "1"),
        shell.set("DOCKER_CERT_PATH", &cert_path),
        shell.comment(&format!("Or, without these variables: docker context use {context}")),
        shell.comment("Run this command to configure your shell:"),
        shell.comment(&shell.apply_command(context)),
    ];
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "tcp://192.168.56.10:2376";

    #[test]
    fn each_shell_gets_its_own_syntax() {
        let path = Path::new("/home/me/.docker/contexts/tls/abc/docker");
        assert_eq!(
            env_lines(Shell::Bash, "uvmkit-vm1", HOST, path),
            "export DOCKER_HOST='tcp://192.168.56.10:2376'\n\
             export DOCKER_TLS_VERIFY='1'\n\
             export DOCKER_CERT_PATH='/home/me/.docker/contexts/tls/abc/docker'\n\
             # Or, without these variables: docker context use uvmkit-vm1\n\
             # Run this command to configure your shell:\n\
             # eval \"$(uvmkit env uvmkit-vm1 --shell bash)\"\n"
        );
        assert_eq!(
            env_lines(Shell::Zsh, "vm", HOST, path).lines().last().unwrap(),
            "# eval \"$(uvmkit env vm --shell zsh)\""
        );
        assert_eq!(
            env_lines(Shell::Fish, "vm", HOST, path),
            "set -gx DOCKER_HOST 'tcp://192.168.56.10:2376';\n\
             set -gx DOCKER_TLS_VERIFY '1';\n\
             set -gx DOCKER_CERT_PATH '/home/me/.docker/contexts/tls/abc/docker';\n\
             # Or, without these variables: docker context use vm\n\
             # Run this command to configure your shell:\n\
             # uvmkit env vm --shell fish | source\n"
        );
        let windows = Path::new(r"C:\Users\Me\.docker\contexts\tls\abc\docker");
        assert_eq!(
            env_lines(Shell::PowerShell, "vm", HOST, windows),
            "$Env:DOCKER_HOST = 'tcp://192.168.56.10:2376'\n\
             $Env:DOCKER_TLS_VERIFY = '1'\n\
             $Env:DOCKER_CERT_PATH = 'C:\\Users\\Me\\.docker\\contexts\\tls\\abc\\docker'\n\
             # Or, without these variables: docker context use vm\n\
             # Run this command to configure your shell:\n\
             # & uvmkit env vm --shell powershell | Invoke-Expression\n"
        );
        assert_eq!(
            env_lines(Shell::Cmd, "vm", HOST, windows),
            "SET \"DOCKER_HOST=tcp://192.168.56.10:2376\"\n\
             SET \"DOCKER_TLS_VERIFY=1\"\n\
             SET \"DOCKER_CERT_PATH=C:\\Users\\Me\\.docker\\contexts\\tls\\abc\\docker\"\n\
             REM Or, without these variables: docker context use vm\n\
             REM Run this command to configure your shell:\n\
             REM @FOR /f \"tokens=*\" %i IN ('uvmkit env vm --shell cmd') DO @%i\n"
        );
    }

    #[test]
    fn quotes_in_paths_survive() {
        let path = Path::new("/home/o'neil/my docker");
        assert!(env_lines(Shell::Bash, "vm", HOST, path).contains("DOCKER_CERT_PATH='/home/o'\\''neil/my docker'"));
        assert!(env_lines(Shell::Fish, "vm", HOST, path).contains("DOCKER_CERT_PATH '/home/o\\'neil/my docker';"));
        assert!(env_lines(Shell::PowerShell, "vm", HOST, path).contains("DOCKER_CERT_PATH = '/home/o''neil/my docker'"));
        for name in ["bash", "sh", "zsh", "fish", "powershell", "pwsh", "cmd", "CMD"] {
            assert!(Shell::from_name(name).is_some(), "{name}");
        }
        assert_eq!(Shell::from_name("tcsh"), None);
    }
}
