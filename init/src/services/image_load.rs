//! Loading a container image archive through the Docker Engine API, so the image needs no
//! `docker` command: the archive is streamed as the body of `POST /images/load` on the
//! engine's unix socket (Engine API, "Import images"), and the answer, a stream of JSON
//! messages, is read to its end. `{"stream": "Loaded image: ..."}` messages are what was
//! loaded; an `{"error": ...}` message (with its `errorDetail`), or a status other than 200
//! with its `{"message": ...}`, is a failure. Progress messages (`{"status": ...}`) are skipped.
//!
//! The load runs on a thread of its own so the event loop never blocks: [`start`] connects and
//! opens the archive (errors there come back at once), [`Load::is_finished`] and [`Load::wait`]
//! collect the outcome, and [`Load::abort`] shuts the connection down, which ends the thread's
//! blocking reads and writes at once (a deadline, or shutdown).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

/// The request path: the engine picks its own API version for an unversioned path.
const LOAD_PATH: &str = "/images/load";
/// Longest response header line or chunk-size line accepted.
const MAX_HEADER_LINE: usize = 8192;

/// Why an archive was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Connecting, sending the archive or reading the answer failed (including a timeout).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The engine answered with an error status.
    #[error("the engine answered {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The engine's `message`, or the body as text.
        message: String,
    },
    /// The engine reported an error in the message stream.
    #[error("the engine reported: {0}")]
    Engine(String),
    /// The answer is not HTTP or not the engine's JSON messages.
    #[error("unexpected answer from the engine: {0}")]
    Protocol(String),
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> LoadError {
    move |source| LoadError::Io { what, source }
}

/// A load in progress.
pub struct Load {
    connection: UnixStream,
    thread: JoinHandle<Result<Vec<String>, LoadError>>,
}

impl Load {
    /// Whether the load has ended (loaded or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the end of the load: the `Loaded image: ...` lines the engine sent, or why
    /// it failed.
    pub fn wait(self) -> Result<Vec<String>, LoadError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(LoadError::Protocol("the load thread panicked".into())))
    }

    /// Closes the connection: the load ends with an error soon after (the engine drops a
    /// half-sent archive).
    pub fn abort(&self) {
        let _ = self.connection.shutdown(Shutdown::Both);
    }
}

/// Starts loading `archive` into the engine listening on `socket`. `idle` bounds every wait for
/// the engine (sending or reading); `emit` receives each message worth logging.
pub fn start(
    socket: &Path,
    archive: &Path,
    idle: Duration,
    emit: impl Fn(&str) + Send + 'static,
) -> Result<Load, LoadError> {
    let file = File::open(archive).map_err(io_error("cannot open the archive"))?;
    let size = file
        .metadata()
        .map_err(io_error("cannot read the archive's size"))?
        .len();
    let connection = UnixStream::connect(socket).map_err(io_error("cannot connect to the engine's socket"))?;
    connection
        .set_read_timeout(Some(idle))
        .and_then(|()| connection.set_write_timeout(Some(idle)))
        .map_err(io_error("cannot set timeouts on the socket"))?;
    let stream = connection.try_clone().map_err(io_error("cannot share the socket"))?;
    let thread = std::thread::Builder::new()
        .name("preload".into())
        .spawn(move || load(stream, file, size, &emit))
        .map_err(io_error("cannot start the load thread"))?;
    Ok(Load { connection, thread })
}

/// Sends the request with the archive as its body, then reads the answer.
fn load(mut stream: UnixStream, mut archive: File, size: u64, emit: &dyn Fn(&str)) -> Result<Vec<String>, LoadError> {
    let head = format!(
        "POST {LOAD_PATH} HTTP/1.1\r\nHost: docker\r\nUser-Agent: uvmkit-init\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(io_error("cannot send the request"))?;
    let sent = io::copy(&mut archive, &mut stream).map_err(io_error("cannot send the archive"))?;
    if sent != size {
        return Err(LoadError::Protocol(format!(
            "the archive changed while it was sent ({sent} of {size} bytes)"
        )));
    }
    read_answer(BufReader::new(stream), emit)
}

/// Reads the HTTP answer: status, headers, then the body's JSON messages.
pub(super) fn read_answer(mut reader: impl BufRead, emit: &dyn Fn(&str)) -> Result<Vec<String>, LoadError> {
    let status_line = read_line(&mut reader)?;
    // RFC 9112 section 4: HTTP-version SP status-code SP [reason-phrase]
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| LoadError::Protocol(format!("status line {status_line:?}")))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(LoadError::Protocol(format!("header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        }
    }
    let body: Box<dyn BufRead + '_> = match (chunked, length) {
        (true, _) => Box::new(BufReader::new(Chunked::new(reader))),
        (false, Some(n)) => Box::new(reader.take(n)),
        (false, None) => Box::new(reader),
    };
    if status != 200 {
        let mut text = String::new();
        body.take(64 << 10)
            .read_to_string(&mut text)
            .map_err(io_error("cannot read the error"))?;
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(LoadError::Status { status, message });
    }
    read_messages(body, emit)
}

/// Reads the engine's JSON messages to the end of the body (they are separated by newlines
/// or simply follow each other).
fn read_messages(body: impl BufRead, emit: &dyn Fn(&str)) -> Result<Vec<String>, LoadError> {
    let mut loaded = Vec::new();
    let messages = serde_json::Deserializer::from_reader(body).into_iter::<serde_json::Value>();
    for message in messages {
        let message = message.map_err(|e| match e.io_error_kind() {
            Some(kind) => LoadError::Io {
                what: "cannot read the answer",
                source: io::Error::new(kind, e.to_string()),
            },
            None => LoadError::Protocol(format!("not a JSON message: {e}")),
        })?;
        if let Some(error) = message.get("error") {
            let detail = message
                .get("errorDetail")
                .and_then(|d| d.get("message"))
                .and_then(|m| m.as_str());
            let text = detail.or(error.as_str()).unwrap_or("(no message)");
            return Err(LoadError::Engine(text.to_string()));
        }
        if let Some(text) = message.get("stream").and_then(|s| s.as_str()) {
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                emit(line);
                loaded.push(line.to_string());
            }
        }
    }
    Ok(loaded)
}

/// One CRLF- (or LF-) terminated line, without its terminator.
fn read_line(reader: &mut impl BufRead) -> Result<String, LoadError> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEADER_LINE as u64)
        .read_until(b'\n', &mut line)
        .map_err(io_error("cannot read the answer"))?;
    if !line.ends_with(b"\n") {
        return Err(LoadError::Protocol(if line.is_empty() {
            "the engine closed the connection without answering".into()
        } else {
            format!("line too long or cut: {:?}", String::from_utf8_lossy(&line))
        }));
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| LoadError::Protocol("a header line is not UTF-8".into()))
}

/// A chunked body (RFC 9112 section 7.1) read as plain bytes.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    /// No chunk read yet (so no CRLF ends a previous one).
    first: bool,
    /// The last chunk was read.
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            first: true,
            done: false,
        }
    }

    /// Reads the next chunk-size line (after the CRLF ending the previous chunk's data).
    fn next_chunk(&mut self) -> io::Result<()> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let to_io = |e: LoadError| invalid(e.to_string());
        if !std::mem::take(&mut self.first) {
            let end = read_line(&mut self.inner).map_err(to_io)?;
            if !end.is_empty() {
                return Err(invalid(format!("chunk not followed by CRLF: {end:?}")));
            }
        }
        let line = read_line(&mut self.inner).map_err(to_io)?;
        let size = line.split(';').next().unwrap_or("").trim();
        self.left = u64::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk size {line:?}")))?;
        if self.left == 0 {
            // The last chunk, then trailer fields up to an empty line.
            while !read_line(&mut self.inner).map_err(to_io)?.is_empty() {}
            self.done = true;
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.done && self.left == 0 {
            self.next_chunk()?;
        }
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the chunked answer was cut",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    fn answer(text: &str) -> (Result<Vec<String>, LoadError>, Vec<String>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let result = read_answer(Cursor::new(text.as_bytes().to_vec()), &move |line: &str| {
            log.lock().unwrap().push(line.to_string())
        });
        let seen = seen.lock().unwrap().clone();
        (result, seen)
    }

    #[test]
    fn chunked_stream_of_messages_names_the_loaded_image() {
        let body =
            "{\"status\":\"Loading layer\",\"progressDetail\":{\"current\":512,\"total\":1024},\"id\":\"ab\"}\r\n\
                    {\"stream\":\"Loaded image: uvmkit-test/busybox:1\\n\"}\r\n";
        let (first, second) = body.split_at(40);
        let text = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{first}\r\n{:x};ext=1\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        );
        let (result, seen) = answer(&text);
        assert_eq!(result.unwrap(), ["Loaded image: uvmkit-test/busybox:1"]);
        assert_eq!(seen, ["Loaded image: uvmkit-test/busybox:1"]);
    }

    #[test]
    fn an_error_message_in_the_stream_fails_the_load() {
        let text = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n\
                    {\"errorDetail\":{\"message\":\"archive/tar: invalid tar header\"},\"error\":\"archive/tar: invalid tar header\"}\n";
        let err = answer(text).0.unwrap_err();
        assert!(
            matches!(err, LoadError::Engine(ref m) if m == "archive/tar: invalid tar header"),
            "{err}"
        );
    }

    #[test]
    fn an_error_status_carries_the_engines_message() {
        let body = "{\"message\":\"unexpected EOF\"}\n";
        let text = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let err = answer(&text).0.unwrap_err();
        assert_eq!(err.to_string(), "the engine answered 500: unexpected EOF");
        let cut = answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{\"stream\":\"x\"}").0;
        assert!(matches!(cut, Err(LoadError::Io { .. })), "{cut:?}");
        assert!(matches!(answer("").0, Err(LoadError::Protocol(_))));
        assert!(matches!(answer("SSH-2.0-x\r\n").0, Err(LoadError::Protocol(_))));
    }

    /// A fake engine on a unix socket: it checks the request and the archive's bytes, and
    /// answers as dockerd does.
    #[test]
    fn streams_the_archive_to_the_socket_and_reads_the_answer() {
        let dir = std::env::temp_dir().join(format!("uvmkit-image-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let archive = dir.join("image.tar");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&archive, &bytes).unwrap();
        let listener = UnixListener::bind(&socket).unwrap();
        let engine = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            let mut body = vec![0u8; 300_000];
            reader.read_exact(&mut body).unwrap();
            let mut conn = conn;
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"stream\":\"Loaded image: x:1\\n\"}\n")
                .unwrap();
            (head, body)
        });
        let load = start(&socket, &archive, Duration::from_secs(10), |_| {}).unwrap();
        assert_eq!(load.wait().unwrap(), ["Loaded image: x:1"]);
        let (head, body) = engine.join().unwrap();
        assert_eq!(head[0], "POST /images/load HTTP/1.1");
        assert!(head.contains(&"Content-Length: 300000".to_string()), "{head:?}");
        assert!(
            head.contains(&"Content-Type: application/x-tar".to_string()),
            "{head:?}"
        );
        assert!(body == bytes, "the engine got other bytes than the archive's");

        // An engine that never answers: the idle timeout ends the load.
        let listener = UnixListener::bind(dir.join("silent.sock")).unwrap();
        let load = start(&dir.join("silent.sock"), &archive, Duration::from_millis(300), |_| {}).unwrap();
        let (_conn, _) = listener.accept().unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(load.wait(), Err(LoadError::Io { .. })));
        assert!(started.elapsed() < Duration::from_secs(5));

        // No engine at all: known at once.
        let missing = start(&dir.join("missing.sock"), &archive, Duration::from_secs(1), |_| {});
        assert!(matches!(missing, Err(LoadError::Io { what, .. }) if what.contains("connect")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
