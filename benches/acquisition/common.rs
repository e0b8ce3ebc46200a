//! Shared helpers of the acquisition benchmarks: process CPU and memory from /proc, child processes that are always killed, statistics.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok());
    ticks.unwrap_or(100.0)
}

/// CPU seconds a process has used so far: the sum of its live threads' on-CPU time from
/// `/proc/PID/task/*/schedstat` (nanoseconds, unlike the 10 ms ticks of `/proc/PID/stat`,
/// too coarse for a process using 1 % of a core). Threads that already exited are not
/// counted; [`cpu_secs_ticks`] counts them at tick resolution.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let mut total_ns = 0u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("read /proc/{pid}/task"))?;
    for task in tasks.flatten() {
        let ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0);
        total_ns += ns;
    }
    Ok(total_ns as f64 / 1e9)
}

/// CPU seconds (user + system) of a process from `/proc/PID/stat`, exited threads
/// included, at clock tick resolution.
pub fn cpu_secs_ticks(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name may contain spaces: fields are counted after its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    Ok((utime + stime) / clock_ticks())
}

/// CPU seconds of this process.
pub fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id()).unwrap_or(0.0)
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmHWM:"), field("VmRSS:")))
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something listens on `addr`, at most `limit`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        pause(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after {limit:?}")
}

/// A child process, killed and reaped on drop (also on an error path).
pub struct Proc {
    pub name: String,
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `command` with stdout piped (for its result line) and stderr to `log`.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Result<Proc> {
        let log =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdout,
        })
    }

    /// Starts `command` with stdout and stderr both to `log` (long-running services).
    pub fn spawn_logged(name: &str, command: &mut Command, log: &Path) -> Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdout: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of the child's stdout (its result or a ready line).
    pub fn read_line(&mut self) -> Result<String> {
        let stdout = self
            .stdout
            .as_mut()
            .ok_or_else(|| anyhow!("{}: no stdout", self.name))?;
        let mut line = String::new();
        let n = stdout.read_line(&mut line)?;
        if n == 0 {
            bail!("{}: ended without output", self.name);
        }
        Ok(line.trim_end().to_owned())
    }

    /// Reads the result line and waits for the child to exit.
    pub fn finish(mut self) -> Result<serde_json::Value> {
        let line = self.read_line()?;
        let _ = self.child.wait();
        serde_json::from_str(&line).with_context(|| format!("{}: bad result {line:?}", self.name))
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if !self.alive() {
                return;
            }
            pause(Duration::from_millis(50));
        }
        // Drop kills.
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This bench binary, to start its helper roles as separate processes.
pub fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().context("path of the bench binary")
}

/// The workspace root (where `config/` and `target/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directory for logs and scratch files of a benchmark run.
pub fn scratch(name: &str) -> Result<PathBuf> {
    let dir = root().join("target").join("bench").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn summary(values: &[f64]) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Summary {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Summary {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

/// `median (min-max)` with `decimals` decimals.
pub fn fmt(s: Summary, decimals: usize) -> String {
    format!(
        "{:.d$} ({:.d$}-{:.d$})",
        s.median,
        s.min,
        s.max,
        d = decimals
    )
}

/// Reads a number from a result object.
pub fn num(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// The release binary `name` of the workspace (built by scripts/bench.sh).
pub fn release_binary(name: &str) -> Result<PathBuf> {
    let path = root().join("target").join("release").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/bench.sh (it builds the release binaries)",
            path.display()
        );
    }
    Ok(path)
}

/// The 1, 5 and 15 minute load averages (how busy the shared machine was).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Blocks the orchestrator's thread for `duration`.
#[expect(
    clippy::disallowed_methods,
    reason = "the orchestrator is a plain thread that waits for other processes; no tokio runtime runs on it"
)]
pub fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

/// Copies `from` to `to` recursively.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Adds `offset` to every `127.0.0.1:PORT` with PORT in 15000..=15299.
pub fn shift_ports(text: &str, offset: u16) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        let (head, tail) = rest.split_at(at + HOST.len());
        out.push_str(head);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u16>() {
            Ok(port) if (15_000..=15_299).contains(&port) => {
                out.push_str(&(port + offset).to_string());
            }
            _ => out.push_str(&digits),
        }
        rest = &tail[digits.len()..];
    }
    out.push_str(rest);
    out
}

pub fn parse_f64(value: Option<&String>, name: &str) -> Result<f64> {
    value
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{name} needs a number"))
}

/// `nproc`, kernel and CPU model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), kernel {}", kernel.trim())
}
