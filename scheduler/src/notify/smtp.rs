//! A small SMTP client for `email` notifiers: one plain-text message per connection
//! (EHLO, [STARTTLS, EHLO,] [AUTH PLAIN,] MAIL FROM, RCPT TO, DATA, QUIT).
//!
//! `AMDAHL_SMTP_URL` is `smtp://[USER:PASSWORD@]HOST[:PORT][?from=ADDRESS&starttls=true&ca=PEM]`
//! or `smtps://…` (TLS from the first byte, port 465 by default; `smtp://` defaults to 25).
//! With `smtp://`, `starttls=true` upgrades the connection before anything else is said, and is
//! required with a user name: a password is never sent in clear. Servers are verified against
//! the system's roots, plus the certificates in the PEM file `ca` (a private CA). The sender is
//! `from`, by default `amdahl@<this host>`; user name and password are percent-decoded.

use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a relay on the scheduler's network).
    None,
    /// Plain text upgraded by STARTTLS before the message.
    StartTls,
    /// TLS from the start (`smtps://`).
    Implicit,
}

/// Where mail goes, how, and who it is from.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub from: String,
    pub tls: SmtpTls,
    /// `AUTH PLAIN` with these, over TLS only.
    pub login: Option<(String, String)>,
    /// Extra trusted certificates (PEM), beside the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for SmtpSettings {
    // The password is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("tls", &self.tls)
            .field("user", &self.login.as_ref().map(|(user, _)| user))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SmtpSettings {
    /// Reads `smtp[s]://[USER:PASSWORD@]HOST[:PORT][?from=…&starttls=true&ca=…]`.
    pub fn parse(url: &str) -> Result<SmtpSettings, String> {
        let (rest, implicit) = if let Some(rest) = url.strip_prefix("smtps://") {
            (rest, true)
        } else if let Some(rest) = url.strip_prefix("smtp://") {
            (rest, false)
        } else {
            return Err("AMDAHL_SMTP_URL must start with smtp:// or smtps://".into());
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (login, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').ok_or(
                    "AMDAHL_SMTP_URL: write the login as USER:PASSWORD@ (percent-encoded)",
                )?;
                (
                    Some((percent_decoded(user)?, percent_decoded(password)?)),
                    hostport,
                )
            }
            None => (None, authority),
        };
        let default_port = if implicit { 465 } else { 25 };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("AMDAHL_SMTP_URL: `{port}` is not a port"))?,
            ),
            _ => (hostport, default_port),
        };
        if host.is_empty() {
            return Err("AMDAHL_SMTP_URL names no host".into());
        }
        let (mut from, mut starttls, mut ca_file) = (None, false, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("from", value)) if value.contains('@') => {
                    from = Some(percent_decoded(value)?)
                }
                Some(("starttls", "true")) => starttls = true,
                Some(("starttls", "false")) => starttls = false,
                Some(("ca", value)) if !value.is_empty() => {
                    ca_file = Some(std::path::PathBuf::from(percent_decoded(value)?))
                }
                _ => return Err(format!("AMDAHL_SMTP_URL: unknown or bad setting `{pair}`")),
            }
        }
        let tls = match (implicit, starttls) {
            (true, true) => {
                return Err("AMDAHL_SMTP_URL: smtps:// is TLS already; drop starttls".into());
            }
            (true, false) => SmtpTls::Implicit,
            (false, true) => SmtpTls::StartTls,
            (false, false) => SmtpTls::None,
        };
        if login.is_some() && tls == SmtpTls::None {
            return Err(
                "AMDAHL_SMTP_URL: a password is never sent in clear; use smtps:// or add \
                 ?starttls=true"
                    .into(),
            );
        }
        let from = from.unwrap_or_else(|| format!("amdahl@{}", hostname()));
        Ok(SmtpSettings {
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
            from,
            tls,
            login,
            ca_file,
        })
    }
}

/// `%XX` escapes decoded (URL user info and query values).
fn percent_decoded(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("AMDAHL_SMTP_URL: a `%` must start an escape such as %40")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "AMDAHL_SMTP_URL: an escape is not UTF-8".to_string())
}

/// Standard base64 (RFC 4648), for `AUTH PLAIN`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a message was not sent: the server's reply code, if it gave one, and whether trying
/// again may help (a 4xx reply or a broken connection; not a 5xx refusal).
#[derive(Debug)]
pub struct SmtpError {
    pub code: Option<i64>,
    pub message: String,
    pub retry: bool,
}

/// A TLS client for `settings`: the system's roots and the `ca` file's certificates.
fn connector(settings: &SmtpSettings) -> Result<TlsConnector, SmtpError> {
    let refuse = |message: String| SmtpError {
        code: None,
        message,
        retry: false,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
            refuse(format!(
                "SMTP: cannot read the CA file {}: {e}",
                path.display()
            ))
        })?;
        for cert in certs {
            let cert = cert
                .map_err(|e| refuse(format!("SMTP: bad certificate in {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| refuse(format!("SMTP: certificate in {}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Sends one message; returns the server's final reply code (250).
pub async fn send(
    settings: &SmtpSettings,
    to: &[String],
    subject: &str,
    body: &str,
) -> Result<i64, SmtpError> {
    let io = |e: std::io::Error| SmtpError {
        code: None,
        message: format!("SMTP {}:{}: {e}", settings.host, settings.port),
        retry: true,
    };
    let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
        .await
        .map_err(io)?;
    let server_name = || {
        rustls_pki_types::ServerName::try_from(settings.host.clone()).map_err(|e| SmtpError {
            code: None,
            message: format!("SMTP: `{}` is no TLS server name: {e}", settings.host),
            retry: false,
        })
    };
    match settings.tls {
        SmtpTls::None => {
            let mut conn = BufReader::new(tcp);
            expect(&mut conn, 220, "greeting").await?;
            converse(&mut conn, settings, to, subject, body).await
        }
        SmtpTls::Implicit => {
            let tls = connector(settings)?
                .connect(server_name()?, tcp)
                .await
                .map_err(|e| tls_failed(settings, e))?;
            let mut conn = BufReader::new(tls);
            expect(&mut conn, 220, "greeting").await?;
            converse(&mut conn, settings, to, subject, body).await
        }
        SmtpTls::StartTls => {
            let mut conn = BufReader::new(tcp);
            expect(&mut conn, 220, "greeting").await?;
            let offered = say(&mut conn, format!("EHLO {}\r\n", hostname()), 250, "EHLO").await?;
            if !offered.1.to_ascii_uppercase().contains("STARTTLS") {
                return Err(SmtpError {
                    code: None,
                    message: format!(
                        "SMTP {}:{} does not offer STARTTLS, and the URL asks for it",
                        settings.host, settings.port
                    ),
                    retry: false,
                });
            }
            say(&mut conn, "STARTTLS\r\n".into(), 220, "STARTTLS").await?;
            // Nothing the server sent before the upgrade is kept (RFC 3207).
            let tcp = conn.into_inner();
            let tls = connector(settings)?
                .connect(server_name()?, tcp)
                .await
                .map_err(|e| tls_failed(settings, e))?;
            let mut conn = BufReader::new(tls);
            converse(&mut conn, settings, to, subject, body).await
        }
    }
}

fn tls_failed(settings: &SmtpSettings, e: std::io::Error) -> SmtpError {
    SmtpError {
        code: None,
        message: format!("SMTP {}:{}: TLS: {e}", settings.host, settings.port),
        // A certificate that does not verify will not verify next time either.
        retry: e.kind() != std::io::ErrorKind::InvalidData,
    }
}

/// The rest of the session, from EHLO: login, envelope, message, QUIT.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    settings: &SmtpSettings,
    to: &[String],
    subject: &str,
    body: &str,
) -> Result<i64, SmtpError> {
    say(conn, format!("EHLO {}\r\n", hostname()), 250, "EHLO").await?;
    if let Some((user, password)) = &settings.login {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        say(conn, format!("AUTH PLAIN {token}\r\n"), 235, "AUTH").await?;
    }
    say(
        conn,
        format!("MAIL FROM:<{}>\r\n", settings.from),
        250,
        "MAIL FROM",
    )
    .await?;
    for address in to {
        say(conn, format!("RCPT TO:<{address}>\r\n"), 250, "RCPT TO").await?;
    }
    say(conn, "DATA\r\n".into(), 354, "DATA").await?;
    let message = format!(
        "From: <{}>\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n.\r\n",
        settings.from,
        to.iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", "),
        header_text(subject),
        chrono::Utc::now().to_rfc2822(),
        dot_stuffed(body),
    );
    let (code, _) = say(conn, message, 250, "the message").await?;
    let _ = say(conn, "QUIT\r\n".into(), 221, "QUIT").await;
    Ok(code)
}

/// Writes `line` and reads the reply: (code, text).
async fn say<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    line: String,
    want: i64,
    what: &str,
) -> Result<(i64, String), SmtpError> {
    conn.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| SmtpError {
            code: None,
            message: format!("SMTP: sending {what}: {e}"),
            retry: true,
        })?;
    conn.get_mut().flush().await.map_err(|e| SmtpError {
        code: None,
        message: format!("SMTP: sending {what}: {e}"),
        retry: true,
    })?;
    expect(conn, want, what).await
}

/// Reads one (possibly multi-line) reply and checks its code: (code, text).
async fn expect<R: AsyncBufRead + Unpin>(
    read: &mut R,
    want: i64,
    what: &str,
) -> Result<(i64, String), SmtpError> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = read.read_line(&mut line).await.map_err(|e| SmtpError {
            code: None,
            message: format!("SMTP: reading the reply to {what}: {e}"),
            retry: true,
        })?;
        if n == 0 {
            return Err(SmtpError {
                code: None,
                message: format!("SMTP: the server closed the connection at {what}"),
                retry: true,
            });
        }
        text.push_str(line.trim_end());
        // `250-…` continues, `250 …` ends the reply.
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break;
        }
        text.push(' ');
    }
    let code: i64 = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
    if code == want {
        Ok((code, text))
    } else {
        Err(SmtpError {
            code: Some(code),
            message: format!("SMTP {what}: {text}"),
            retry: !(500..600).contains(&code),
        })
    }
}

/// A header value on one line.
fn header_text(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// The body with CRLF line ends and every line that starts with `.` doubled (RFC 5321 4.5.2).
fn dot_stuffed(body: &str) -> String {
    body.lines()
        .map(|line| {
            if line.starts_with('.') {
                format!(".{line}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_host_port_and_sender() {
        let s = SmtpSettings::parse("smtp://mail.local:2525?from=etl@example.com").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.from.as_str()),
            ("mail.local", 2525, "etl@example.com")
        );
        assert_eq!(SmtpSettings::parse("smtp://relay").unwrap().port, 25);
        assert_eq!(
            SmtpSettings::parse("smtp://relay").unwrap().tls,
            SmtpTls::None
        );
        let tls = SmtpSettings::parse("smtps://ops%40example.com:p%3Ass@mail.example.com").unwrap();
        assert_eq!((tls.port, tls.tls), (465, SmtpTls::Implicit));
        assert_eq!(
            tls.login,
            Some(("ops@example.com".to_string(), "p:ss".to_string()))
        );
        assert!(
            !format!("{tls:?}").contains("p:ss"),
            "the password is never printed"
        );
        let upgraded =
            SmtpSettings::parse("smtp://u:p@relay:587?starttls=true&ca=/etc/ca.pem").unwrap();
        assert_eq!((upgraded.port, upgraded.tls), (587, SmtpTls::StartTls));
        assert_eq!(upgraded.ca_file, Some("/etc/ca.pem".into()));
        // A password in clear, or TLS twice, is refused.
        assert!(SmtpSettings::parse("smtp://u:p@relay").is_err());
        assert!(SmtpSettings::parse("smtps://relay?starttls=true").is_err());
        assert!(SmtpSettings::parse("smtp://u@relay?starttls=true").is_err());
        assert!(SmtpSettings::parse("http://relay").is_err());
        assert!(SmtpSettings::parse("smtp://relay:x").is_err());
        assert!(SmtpSettings::parse("smtp://relay?from=nobody").is_err());
    }

    /// A private CA and a certificate it signed for `localhost`: (CA, certificate, key). The
    /// openssl command line tool makes them.
    fn certificate(
        dir: &std::path::Path,
    ) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let file = |name: &str| dir.join(name).display().to_string();
        let run = |args: &[&str]| {
            let made = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("the SMTP TLS test needs the openssl command (apt-get install openssl)");
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
        };
        let (ca, ca_key) = (file("ca.pem"), file("ca-key.pem"));
        let (cert, key, csr, ext) = (
            file("cert.pem"),
            file("key.pem"),
            file("req.csr"),
            file("ext"),
        );
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        (ca.into(), cert.into(), key.into())
    }

    /// What the test server saw: the AUTH line and the message.
    type Seen = (String, String);

    /// One session of a server that wants TLS (STARTTLS, or from the start) and AUTH PLAIN.
    async fn serve_once(
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        implicit: bool,
    ) -> Seen {
        let (tcp, _) = listener.accept().await.unwrap();
        if implicit {
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut conn = BufReader::new(tls);
            conn.get_mut()
                .write_all(b"220 tls ESMTP\r\n")
                .await
                .unwrap();
            return session(conn).await;
        }
        let mut conn = BufReader::new(tcp);
        conn.get_mut()
            .write_all(b"220 plain ESMTP\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("EHLO"), "{line}");
        conn.get_mut()
            .write_all(b"250-test\r\n250 STARTTLS\r\n")
            .await
            .unwrap();
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        assert_eq!(line, "STARTTLS\r\n");
        conn.get_mut().write_all(b"220 go ahead\r\n").await.unwrap();
        let tls = acceptor.accept(conn.into_inner()).await;
        match tls {
            Ok(tls) => session(BufReader::new(tls)).await,
            // The client refused the certificate.
            Err(e) => (String::new(), format!("handshake failed: {e}")),
        }
    }

    async fn session<S: AsyncRead + AsyncWrite + Unpin>(mut conn: BufReader<S>) -> Seen {
        let (mut auth, mut message, mut data) = (String::new(), String::new(), false);
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                return (auth, message);
            }
            if data {
                if line == ".\r\n" {
                    data = false;
                    conn.get_mut().write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    message.push_str(&line);
                }
                continue;
            }
            let reply: &[u8] = match line.get(..4).unwrap_or_default() {
                "EHLO" => b"250-test\r\n250 AUTH PLAIN\r\n",
                "AUTH" => {
                    auth = line.trim_end().to_string();
                    b"235 welcome\r\n"
                }
                "MAIL" | "RCPT" => b"250 ok\r\n",
                "DATA" => {
                    data = true;
                    b"354 go on\r\n"
                }
                "QUIT" => {
                    conn.get_mut().write_all(b"221 bye\r\n").await.unwrap();
                    return (auth, message);
                }
                _ => b"502 what\r\n",
            };
            conn.get_mut().write_all(reply).await.unwrap();
        }
    }

    /// Over STARTTLS and over TLS from the start, with a login: the server verifies against
    /// the `ca` file, gets `AUTH PLAIN` only inside TLS, and the message; without the `ca`,
    /// the self-signed server is refused and nothing is sent (and not retried).
    #[tokio::test]
    async fn mail_goes_over_tls_with_a_login() {
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = certificate(dir.path());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls_pki_types::CertificateDer::from_pem_file(&cert).unwrap()],
                rustls_pki_types::PrivateKeyDer::from_pem_file(&key).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let to = vec!["oncall@example.com".to_string()];
        for (scheme, implicit) in [("smtp", false), ("smtps", true)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(serve_once(listener, acceptor.clone(), implicit));
            let query = if implicit { "" } else { "starttls=true&" };
            let url = format!(
                "{scheme}://ops:s3cret@localhost:{port}?{query}from=amdahl@example.com&ca={}",
                ca.display()
            );
            let settings = SmtpSettings::parse(&url).unwrap();
            let code = send(&settings, &to, "load failed", "the body").await;
            assert_eq!(code.map_err(|e| e.message).unwrap(), 250, "{scheme}");
            let (auth, message) = server.await.unwrap();
            assert_eq!(auth, format!("AUTH PLAIN {}", base64(b"\0ops\0s3cret")));
            assert!(message.contains("Subject: load failed"), "{message}");
            assert!(message.contains("the body"), "{message}");
        }
        // Not trusted: refused, said so, not to be retried; the password never left.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(listener, acceptor.clone(), false));
        let settings =
            SmtpSettings::parse(&format!("smtp://ops:s3cret@localhost:{port}?starttls=true"))
                .unwrap();
        let refused = send(&settings, &to, "s", "b").await.unwrap_err();
        assert!(refused.message.contains("TLS"), "{}", refused.message);
        assert!(!refused.retry);
        let (auth, _) = server.await.unwrap();
        assert!(auth.is_empty());
    }

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("\0user\0pass", "AHVzZXIAcGFzcw=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn bodies_are_dot_stuffed() {
        assert_eq!(dot_stuffed("a\n.b\n..c"), "a\r\n..b\r\n...c");
        assert_eq!(header_text("a\r\nb"), "a  b");
    }
}
