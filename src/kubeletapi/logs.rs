//! `/containerLogs/{ns}/{pod}/{container}`: a container's CRI log as `kubectl logs` shows it,
//! with follow, tailLines, sinceSeconds, sinceTime, timestamps, previous and limitBytes.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tracing::debug;

use super::{Body, bad_request, find, query_flag, query_value};
use crate::runtime::container::{Runtime, Status};
use crate::runtime::logs::{LogLine, LogReader};

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<jiff::Timestamp>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<usize>,
}

pub fn parse_options(query: &[(String, String)]) -> Result<Options, String> {
    let number = |name: &str| -> Result<Option<i64>, String> {
        query_value(query, name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{name}={v:?} is not a number"))
            })
            .transpose()
    };
    let since_seconds = number("sinceSeconds")?;
    let since_time = query_value(query, "sinceTime")
        .map(|t| {
            t.parse::<jiff::Timestamp>()
                .map_err(|e| format!("sinceTime={t:?} is not an RFC 3339 time: {e}"))
        })
        .transpose()?;
    if since_seconds.is_some() && since_time.is_some() {
        return Err("at most one of sinceTime or sinceSeconds may be specified".into());
    }
    let since = match (since_seconds, since_time) {
        (Some(s), _) if s < 1 => return Err("sinceSeconds must be greater than 0".into()),
        (Some(s), _) => Some(
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(s))
                .map_err(|e| format!("sinceSeconds={s}: {e}"))?,
        ),
        (None, t) => t,
    };
    let tail_lines = match number("tailLines")? {
        Some(n) if n < 0 => None,
        Some(n) => Some(n as usize),
        None => None,
    };
    let limit_bytes = match number("limitBytes")? {
        Some(n) if n < 1 => return Err("limitBytes must be greater than 0".into()),
        Some(n) => Some(n as usize),
        None => None,
    };
    Ok(Options {
        follow: query_flag(query, "follow"),
        tail_lines,
        since,
        timestamps: query_flag(query, "timestamps"),
        previous: query_flag(query, "previous"),
        limit_bytes,
    })
}

pub async fn handle(
    runtime: &Runtime,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let options = match parse_options(query) {
        Ok(o) => o,
        Err(e) => return bad_request(&e),
    };
    let attempts = find::attempts(runtime, ns, pod, Some(container));
    let chosen = if options.previous {
        match attempts.get(1) {
            Some(f) => f.clone(),
            None => {
                return bad_request(&format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ));
            }
        }
    } else {
        match attempts.first() {
            Some(f) => f.clone(),
            None => {
                return bad_request(&format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                ));
            }
        }
    };
    let path = runtime.log_path(&chosen.id);
    let mut reader = match LogReader::open(&path) {
        Ok(r) => r,
        // Created but not started yet: nothing logged.
        Err(_) => return Response::new(super::full("")),
    };
    let follow = options.follow && !options.previous;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let state_dir_runtime = runtime.dir(&chosen.id);
    tokio::spawn(async move {
        let mut sent = 0usize;
        let mut first = true;
        loop {
            let running = crate::runtime::container::read_state(&state_dir_runtime)
                .map(|s| s.status != Status::Exited)
                .unwrap_or(false);
            let lines = match reader.read_new() {
                Ok(l) => l,
                Err(e) => {
                    debug!(error = %e, "cannot read the log");
                    return;
                }
            };
            let lines = select(lines, &options, first);
            first = false;
            for line in lines {
                let mut text = Vec::with_capacity(line.text.len() + 40);
                if options.timestamps {
                    text.extend_from_slice(line.time.as_bytes());
                    text.push(b' ');
                }
                text.extend_from_slice(&line.text);
                text.push(b'\n');
                if let Some(limit) = options.limit_bytes {
                    let room = limit.saturating_sub(sent);
                    text.truncate(room);
                }
                sent += text.len();
                if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
                    return;
                }
                if options.limit_bytes.is_some_and(|l| sent >= l) {
                    return;
                }
            }
            if !follow || !running {
                return;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            if tx.is_closed() {
                return;
            }
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap_or_else(|_| Response::new(super::full("")))
}

/// Applies since and (on the first read only) tail to what was read.
fn select(lines: Vec<LogLine>, options: &Options, first: bool) -> Vec<LogLine> {
    let mut kept: VecDeque<LogLine> = lines
        .into_iter()
        .filter(|l| match options.since {
            Some(since) => l
                .time
                .parse::<jiff::Timestamp>()
                .map(|t| t >= since)
                .unwrap_or(true),
            None => true,
        })
        .collect();
    if first && let Some(n) = options.tail_lines {
        while kept.len() > n {
            kept.pop_front();
        }
    }
    kept.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::logs::Stream;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_parse_and_bad_ones_say_why() {
        let o = parse_options(&q(&[
            ("follow", "true"),
            ("tailLines", "2"),
            ("timestamps", "true"),
            ("limitBytes", "10"),
        ]))
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(2));
        assert_eq!(o.limit_bytes, Some(10));
        assert!(parse_options(&q(&[("tailLines", "x")])).is_err());
        assert!(parse_options(&q(&[("sinceSeconds", "0")])).is_err());
        assert!(
            parse_options(&q(&[
                ("sinceSeconds", "5"),
                ("sinceTime", "2024-01-01T00:00:00Z")
            ]))
            .is_err()
        );
        let o = parse_options(&q(&[("sinceTime", "2024-01-01T00:00:00Z")])).unwrap();
        assert!(o.since.is_some());
    }

    #[test]
    fn tail_and_since_select_lines() {
        let line = |t: &str, s: &str| LogLine {
            time: t.into(),
            stream: Stream::Stdout,
            text: s.as_bytes().to_vec(),
        };
        let lines = vec![
            line("2024-01-01T00:00:01Z", "a"),
            line("2024-01-01T00:00:02Z", "b"),
            line("2024-01-01T00:00:03Z", "c"),
        ];
        let tail = Options {
            tail_lines: Some(2),
            ..Default::default()
        };
        let texts = |v: Vec<LogLine>| v.into_iter().map(|l| l.text).collect::<Vec<_>>();
        assert_eq!(
            texts(select(lines.clone(), &tail, true)),
            [b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(texts(select(lines.clone(), &tail, false)).len(), 3);
        let since = Options {
            since: Some("2024-01-01T00:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            texts(select(lines, &since, true)),
            [b"b".to_vec(), b"c".to_vec()]
        );
    }
}
