//! Container logs in the CRI format kubelet reads (`kubectl logs` later serves these files):
//! one record per line, `<RFC 3339 time> <stdout|stderr> <F|P> <text>`. A line longer than
//! [`MAX_LINE`] is cut into partial (`P`) records closed by a full (`F`) one.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};

pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

pub struct LogWriter {
    file: File,
    pending: [Vec<u8>; 2],
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl LogWriter {
    pub fn create(path: &Path) -> Result<LogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the log {}", path.display()))?;
        Ok(LogWriter {
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    fn record(&mut self, stream: Stream, tag: char, text: &[u8]) -> Result<()> {
        let mut line =
            format!("{} {} {tag} ", jiff::Timestamp::now(), stream.as_str()).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        self.file
            .write_all(&line)
            .context("cannot write the container log")
    }

    /// Takes output as it arrives; writes every complete line.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> Result<()> {
        let i = index(stream);
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let mut text = std::mem::take(&mut self.pending[i]);
                    text.extend_from_slice(&data[..end]);
                    data = &data[end + 1..];
                    // A "\r\n" ending (a terminal's) is one line end, as containerd reads it.
                    if text.last() == Some(&b'\r') {
                        text.pop();
                    }
                    let mut rest: &[u8] = &text;
                    while rest.len() > MAX_LINE {
                        self.record(stream, 'P', &rest[..MAX_LINE])?;
                        rest = &rest[MAX_LINE..];
                    }
                    self.record(stream, 'F', rest)?;
                }
                None => {
                    self.pending[i].extend_from_slice(data);
                    data = &[];
                    while self.pending[i].len() >= MAX_LINE {
                        let rest = self.pending[i].split_off(MAX_LINE);
                        let full = std::mem::replace(&mut self.pending[i], rest);
                        self.record(stream, 'P', &full)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: a last line without a newline is written as a full line.
    pub fn close(&mut self, stream: Stream) -> Result<()> {
        let i = index(stream);
        if !self.pending[i].is_empty() {
            let text = std::mem::take(&mut self.pending[i]);
            self.record(stream, 'F', &text)?;
        }
        Ok(())
    }
}

/// One log line, partial records joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: Stream,
    pub text: Vec<u8>,
}

/// Reads a log file from where it last stopped (for following a running container).
pub struct LogReader {
    file: File,
    buffer: Vec<u8>,
    partial: [Vec<u8>; 2],
}

impl LogReader {
    pub fn open(path: &Path) -> Result<LogReader> {
        let file =
            File::open(path).with_context(|| format!("cannot open the log {}", path.display()))?;
        Ok(LogReader {
            file,
            buffer: Vec::new(),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// The lines completed since the last call.
    pub fn read_new(&mut self) -> Result<Vec<LogLine>> {
        self.file
            .read_to_end(&mut self.buffer)
            .context("cannot read the container log")?;
        let mut out = Vec::new();
        let mut consumed = 0;
        while let Some(end) = self.buffer[consumed..].iter().position(|&b| b == b'\n') {
            let record = &self.buffer[consumed..consumed + end];
            consumed += end + 1;
            let mut parts = record.splitn(4, |&b| b == b' ');
            let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let text = parts.next().unwrap_or(b"");
            let stream = match stream {
                b"stdout" => Stream::Stdout,
                b"stderr" => Stream::Stderr,
                _ => continue,
            };
            let i = index(stream);
            self.partial[i].extend_from_slice(text);
            if tag == b"F" {
                out.push(LogLine {
                    time: String::from_utf8_lossy(time).into_owned(),
                    stream,
                    text: std::mem::take(&mut self.partial[i]),
                });
            }
        }
        self.buffer.drain(..consumed);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partial_lines_and_long_lines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::create(&path).unwrap();
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\n\n").unwrap();
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        w.write(Stream::Stdout, &long).unwrap();
        w.write(Stream::Stdout, b"\nlast").unwrap();
        w.write(Stream::Stderr, b"tty\r\n").unwrap();
        w.close(Stream::Stdout).unwrap();
        w.close(Stream::Stderr).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(
            tags,
            ["F", "F", "F", "F", "P", "P", "F", "F", "F"],
            "{text}"
        );
        assert!(text.lines().next().unwrap().ends_with(" stdout F hello"));
        let mut r = LogReader::open(&path).unwrap();
        let lines = r.read_new().unwrap();
        let texts: Vec<(Stream, Vec<u8>)> = lines.into_iter().map(|l| (l.stream, l.text)).collect();
        assert_eq!(
            texts,
            vec![
                (Stream::Stdout, b"hello".to_vec()),
                (Stream::Stderr, b"oops".to_vec()),
                (Stream::Stdout, b"world".to_vec()),
                (Stream::Stdout, b"".to_vec()),
                (Stream::Stdout, long.clone()),
                (Stream::Stderr, b"tty".to_vec()),
                (Stream::Stdout, b"last".to_vec()),
            ]
        );
        assert!(r.read_new().unwrap().is_empty());
    }
}
