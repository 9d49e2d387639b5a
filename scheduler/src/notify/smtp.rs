//! A small SMTP client for `email` notifiers: one plain-text message per connection
//! (EHLO, MAIL FROM, RCPT TO, DATA, QUIT), to a relay on the scheduler's network.
//!
//! `AMDAHL_SMTP_URL` is `smtp://HOST[:PORT][?from=ADDRESS]` (port 25 by default, sender
//! `amdahl@<this host>`). It speaks no TLS and no AUTH: point it at a local relay (Postfix, a
//! cloud provider's SMTP relay agent, an in-cluster MTA) that forwards onward.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Where mail goes and who it is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub from: String,
}

impl SmtpSettings {
    /// Reads `smtp://HOST[:PORT][?from=ADDRESS]`.
    pub fn parse(url: &str) -> Result<SmtpSettings, String> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or_else(|| format!("AMDAHL_SMTP_URL `{url}` must start with smtp://"))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.contains('@') {
            return Err(
                "AMDAHL_SMTP_URL: user names and passwords are not supported; use a \
                        relay that accepts this host"
                    .into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("AMDAHL_SMTP_URL: `{port}` is not a port"))?,
            ),
            None => (authority, 25),
        };
        if host.is_empty() {
            return Err(format!("AMDAHL_SMTP_URL `{url}` names no host"));
        }
        let mut from = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("from", value)) if value.contains('@') => from = Some(value.to_string()),
                _ => return Err(format!("AMDAHL_SMTP_URL: unknown or bad setting `{pair}`")),
            }
        }
        let from = from.unwrap_or_else(|| format!("amdahl@{}", hostname()));
        Ok(SmtpSettings {
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
            from,
        })
    }
}

/// Why a message was not sent: the server's reply code, if it gave one, and whether trying
/// again may help (a 4xx reply or a broken connection; not a 5xx refusal).
#[derive(Debug)]
pub struct SmtpError {
    pub code: Option<i64>,
    pub message: String,
    pub retry: bool,
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
    let stream = TcpStream::connect((settings.host.as_str(), settings.port))
        .await
        .map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, 220, "greeting").await?;
    let mut say = async |line: String, want: i64, what: &str| -> Result<i64, SmtpError> {
        write.write_all(line.as_bytes()).await.map_err(io)?;
        expect(&mut read, want, what).await
    };
    say(format!("EHLO {}\r\n", hostname()), 250, "EHLO").await?;
    say(
        format!("MAIL FROM:<{}>\r\n", settings.from),
        250,
        "MAIL FROM",
    )
    .await?;
    for address in to {
        say(format!("RCPT TO:<{address}>\r\n"), 250, "RCPT TO").await?;
    }
    say("DATA\r\n".into(), 354, "DATA").await?;
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
    let code = say(message, 250, "the message").await?;
    let _ = say("QUIT\r\n".into(), 221, "QUIT").await;
    Ok(code)
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    want: i64,
    what: &str,
) -> Result<i64, SmtpError> {
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
        Ok(code)
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
        assert!(SmtpSettings::parse("smtps://relay").is_err());
        assert!(SmtpSettings::parse("smtp://u:p@relay").is_err());
        assert!(SmtpSettings::parse("smtp://relay:x").is_err());
        assert!(SmtpSettings::parse("smtp://relay?from=nobody").is_err());
    }

    #[test]
    fn bodies_are_dot_stuffed() {
        assert_eq!(dot_stuffed("a\n.b\n..c"), "a\r\n..b\r\n...c");
        assert_eq!(header_text("a\r\nb"), "a  b");
    }
}
