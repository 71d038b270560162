//! Debian's nginx (`.ci/run` installs it), run by a test in the foreground as one process on a
//! loopback address, with everything it writes inside the test's directory: as a reverse proxy in
//! front of clicktermd, or as a webhook receiver that demands client certificates. Killed on drop.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DEADLINE;

const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    child: Child,
    pub port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx with one `server` block listening on `ip` and a free port; `server` is the
    /// block's body after its `listen` line, given the port.
    pub fn start(dir: &Path, ip: IpAddr, server: impl FnOnce(u16) -> String) -> Nginx {
        assert!(ip.is_loopback(), "nginx listens on loopback only, not {ip}");
        let port = super::free_port();
        let d = dir.display();
        let listen = match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        };
        let body = server(port);
        let conf = format!(
            "daemon off; master_process off; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen {listen}{ssl};
{body}
  }}
}}
",
            ssl = if body.contains("ssl_certificate ") {
                " ssl"
            } else {
                ""
            }
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts (Debian's nginx package; .ci/run installs it)");
        let nginx = Nginx { child, port };
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}
