//! The worker side (`dashd flow-worker`): lowers its own address-space limit, greets,
//! then answers step requests from stdin on stdout until stdin closes. Single-threaded
//! and without logging: stdout carries only frames, and anything said on stderr ends up
//! in dashd's log. Bad input is answered with an error; only a frame it cannot read
//! past ends the process.

use std::io::{self, BufReader, BufWriter, Write};
use std::process::ExitCode;

use dash_core::flow::{Effect, Event};
use nix::sys::resource::{Resource, setrlimit};

use super::engine::{self, BundleCache, Loaded};
use super::wire::{self, FrameError, Request, Response, StepWire};

/// Limits a worker runs under, from its command line.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    /// Address-space limit (`RLIMIT_AS`) in MiB; 0 leaves it unlimited.
    pub memory_mb: u64,
    /// Budget for compiled flows in MiB.
    pub cache_mb: u64,
}

/// Runs the worker until stdin closes.
pub fn serve(limits: WorkerLimits) -> ExitCode {
    // A worker that dies of its limit must not leave a core dump of tenant data behind.
    if let Err(err) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        eprintln!("dashd flow-worker: cannot disable core dumps: {err}");
        return ExitCode::FAILURE;
    }
    if limits.memory_mb > 0 {
        let bytes = limits.memory_mb.saturating_mul(1 << 20);
        if let Err(err) = setrlimit(Resource::RLIMIT_AS, bytes, bytes) {
            eprintln!("dashd flow-worker: cannot set the memory limit: {err}");
            return ExitCode::FAILURE;
        }
    }
    let budget = usize::try_from(limits.cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let mut cache = BundleCache::new(budget);
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let hello: Response<Effect> = Response::Hello {
        protocol: wire::PROTOCOL,
        version: wire::dashd_version(),
    };
    if answer(&mut output, &hello).is_err() {
        return ExitCode::FAILURE;
    }
    loop {
        let response = match wire::read_frame(&mut input) {
            Ok(None) => return ExitCode::SUCCESS,
            Ok(Some(frame)) => match serde_json::from_slice::<Request>(&frame) {
                Ok(Request::Step(step)) => handle_step(&mut cache, *step),
                Ok(Request::Compile { document, limits }) => Response::Compiled {
                    errors: engine::validate(&document, &limits),
                },
                Err(err) => Response::Failed {
                    message: format!("malformed request: {err}"),
                },
            },
            Err(FrameError::TooLarge(len)) => Response::Failed {
                message: format!("request of {len} bytes is over the frame limit"),
            },
            Err(FrameError::Io(err)) => {
                eprintln!("dashd flow-worker: reading a request: {err}");
                return ExitCode::FAILURE;
            }
        };
        if answer(&mut output, &response).is_err() {
            // dashd went away; nothing left to do.
            return ExitCode::FAILURE;
        }
    }
}

fn answer(output: &mut impl Write, response: &Response<Effect>) -> io::Result<()> {
    let body = match serde_json::to_vec(response) {
        Ok(body) => body,
        Err(err) => serde_json::to_vec(&Response::<Effect>::Failed {
            message: format!("cannot encode the result: {err}"),
        })?,
    };
    match wire::write_frame(output, &body) {
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => {
            let failed = serde_json::to_vec(&Response::<Effect>::Failed {
                message: format!("result of {} bytes is over the frame limit", body.len()),
            })?;
            wire::write_frame(output, &failed)
        }
        other => other,
    }
}

fn handle_step(cache: &mut BundleCache, step: StepWire) -> Response<Effect> {
    let StepWire {
        active,
        current,
        documents,
        state,
        event,
        context,
    } = step;
    let mut loaded = Loaded::default();
    let mut missing = Vec::new();
    for (key, is_active) in [(active, true), (current, false)] {
        let Some(key) = key else { continue };
        let compiled = match cache.get(&key) {
            Some(compiled) => compiled,
            None => match documents.iter().find(|d| d.key == key) {
                Some(doc) => {
                    let (compiled, size) = engine::compile(&key, &doc.document);
                    cache.insert(key.clone(), compiled.clone(), size);
                    compiled
                }
                None => {
                    missing.push(key);
                    continue;
                }
            },
        };
        loaded.set(&key, compiled, is_active);
    }
    if !missing.is_empty() {
        return Response::Missing { keys: missing };
    }
    engine::run(loaded, state, &Event::from(event), &context)
}
