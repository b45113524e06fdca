//! `birkhoff dump`.

use std::process::ExitCode;

use anyhow::Result;
use birkhoff::ir::to_dot;

use crate::args::{DumpArgs, DumpFormat};
use crate::source;

pub fn main(a: &DumpArgs) -> Result<ExitCode> {
    let src = source::load(&a.source, &a.model, &a.import)?;
    let text = match a.format {
        DumpFormat::Text => format!("{}{}", src.header(), src.graph),
        DumpFormat::Dot => to_dot(&src.graph),
    };
    match &a.output {
        Some(path) => birkhoff::write_atomic(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
