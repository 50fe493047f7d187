//! Which PostgreSQL server the tests use, found once per test process:
//!
//! 1. `TEST_DATABASE_URL`, when set (a server that does not answer there is a failure);
//! 2. else `postgres://postgres@127.0.0.1:5432/test`, when a server answers there;
//! 3. else a throwaway cluster: `initdb` and `pg_ctl` on a temporary directory and a free port,
//!    when PostgreSQL's server programs are installed. A watchdog process stops it and removes
//!    the directory once the test process has gone, however it ended;
//! 4. else none, and every PostgreSQL test skips (see `skip`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server's URL, or why there is none.
pub fn server() -> Result<&'static str, &'static str> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(find_server)
        .as_ref()
        .map(String::as_str)
        .map_err(String::as_str)
}

/// Whether a server is there; when not, the calling test skips (said once per process) or,
/// under `TEST_NO_SKIP`, fails.
pub fn available() -> bool {
    match server() {
        Ok(_) => true,
        Err(why) => {
            super::skip::skip("every PostgreSQL test", why);
            false
        }
    }
}

fn find_server() -> Result<String, String> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return Ok(url);
    }
    if answers(DEFAULT_URL).is_ok() {
        return Ok(DEFAULT_URL.to_owned());
    }
    throwaway_cluster().map_err(|why| {
        format!("no PostgreSQL server answers at {DEFAULT_URL} (set TEST_DATABASE_URL), and {why}")
    })
}

/// Connects to `url` and runs `statement`, on a thread and runtime of its own (the caller may be
/// on any runtime, or none).
fn execute(url: &str, statement: &str) -> Result<(), String> {
    let (url, statement) = (url.to_owned(), statement.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(async {
            let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|error| error.to_string())?;
            let connection = tokio::spawn(connection);
            let done = client
                .batch_execute(&statement)
                .await
                .map_err(|error| error.to_string());
            drop(client);
            let _ = connection.await;
            done
        })
    })
    .join()
    .map_err(|_| "the connecting thread panicked".to_owned())?
}

fn answers(url: &str) -> Result<(), String> {
    execute(url, "SELECT 1")
}

/// Starts a cluster of our own and returns the URL of its database `test`.
fn throwaway_cluster() -> Result<String, String> {
    let cluster = Cluster::start(|_| Ok(()), "")?;
    execute(&format!("{}/postgres", cluster.url), "CREATE DATABASE test")?;
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "note: the PostgreSQL tests run on a throwaway cluster at {}/test\n",
            cluster.url
        )
        .as_bytes(),
    );
    Ok(format!("{}/test", cluster.url))
}

/// A PostgreSQL cluster of the tests' own, on a free port of 127.0.0.1, trusting every local
/// connection as `postgres`. It is stopped, and its folder removed, once the test process ends.
pub struct Cluster {
    /// `postgres://postgres@127.0.0.1:PORT`, without a database.
    pub url: String,
    /// Where its data and anything `prepare` wrote live.
    pub folder: PathBuf,
}

impl Cluster {
    /// Makes the cluster's folder, lets `prepare` write files into it (certificates, say), then
    /// initialises and starts the cluster with `settings` added to the server's options
    /// (`{folder}` in them stands for the folder).
    pub fn start(
        prepare: impl FnOnce(&Path) -> Result<(), String>,
        settings: &str,
    ) -> Result<Cluster, String> {
        let programs = server_programs()
            .ok_or("PostgreSQL's server programs (initdb, pg_ctl) are not installed".to_owned())?;
        let owner = Owner::find()?;
        let folder = tempfile::Builder::new()
            .prefix("webhook-inbox-pg-")
            .tempdir()
            .map_err(|error| format!("cannot make a temporary directory: {error}"))?
            .keep();
        prepare(&folder)?;
        owner.take(&folder)?;
        let data = folder.join("data");
        owner.run(Command::new(programs.join("initdb")).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        let port = crate::child::free_port();
        let server_options = format!(
            "-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 {}",
            settings.replace("{folder}", &folder.display().to_string()),
            folder = folder.display(),
        );
        owner.run(
            Command::new(programs.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-l"])
                .arg(folder.join("server.log"))
                .args(["-o", &server_options, "start"]),
        )?;
        stop_when_this_process_ends(&owner, &programs, &folder)?;
        Ok(Cluster {
            url: format!("postgres://postgres@127.0.0.1:{port}"),
            folder,
        })
    }
}

/// The folder of `initdb` and `pg_ctl`: on the `PATH`, or where Debian installs them.
fn server_programs() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|entry| entry.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path
        .into_iter()
        .chain(debian)
        .find(|folder| folder.join("initdb").is_file() && folder.join("pg_ctl").is_file())
}

/// Who runs the cluster: this user, or the `postgres` user when this is root (PostgreSQL
/// refuses to run as root).
enum Owner {
    Me,
    Postgres,
}

impl Owner {
    fn find() -> Result<Owner, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|error| error.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Ok(Owner::Me);
        }
        let exists = Command::new("id")
            .arg("postgres")
            .output()
            .is_ok_and(|out| out.status.success());
        if exists {
            Ok(Owner::Postgres)
        } else {
            Err("the tests run as root, which PostgreSQL refuses, and there is no postgres user".to_owned())
        }
    }

    fn take(&self, folder: &Path) -> Result<(), String> {
        match self {
            Owner::Me => Ok(()),
            Owner::Postgres => run(Command::new("chown").arg("-R").arg("postgres").arg(folder)),
        }
    }

    /// `command` as this owner.
    fn command(&self, command: &Command) -> Command {
        let mut wrapped = match self {
            Owner::Me => Command::new(command.get_program()),
            Owner::Postgres => {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", "postgres", "--"]).arg(command.get_program());
                runuser
            }
        };
        wrapped.args(command.get_args());
        wrapped
    }

    fn run(&self, command: &mut Command) -> Result<(), String> {
        run(&mut self.command(command))
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {:?}: {error}", command.get_program()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A shell that waits for this process to end, then stops the cluster and removes its folder.
fn stop_when_this_process_ends(owner: &Owner, programs: &Path, folder: &Path) -> Result<(), String> {
    let stop = owner.command(
        Command::new(programs.join("pg_ctl"))
            .arg("-D")
            .arg(folder.join("data"))
            .args(["-m", "immediate", "stop"]),
    );
    let stop_line: Vec<String> = std::iter::once(stop.get_program())
        .chain(stop.get_args())
        .map(|part| shell_quote(&part.to_string_lossy()))
        .collect();
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {folder}",
        pid = std::process::id(),
        stop = stop_line.join(" "),
        folder = shell_quote(&folder.to_string_lossy()),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|error| format!("cannot start the cluster's watchdog: {error}"))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
