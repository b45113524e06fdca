//! `birkhoff gpu-audit`: the static checks of the GPU code that stand in
//! for a device (see `docs/gpu.md`, "Checking the code without a GPU").

#[cfg(feature = "gpu")]
pub use enabled::main;

#[cfg(not(feature = "gpu"))]
pub fn main(_a: &crate::args::GpuAuditArgs) -> anyhow::Result<std::process::ExitCode> {
    Err(birkhoff::gpu::GpuError::CodegenNotEnabled.into())
}

/// The audit, in builds that generate GPU code.
#[cfg(feature = "gpu")]
mod enabled {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitCode};

    use anyhow::{Context, Result, bail};
    use birkhoff::gpu::codegen::audit::{DeviceModel, Finding, LaunchAudit};
    use birkhoff::gpu_audit::{AuditShapes, ProgramAudit, audit_program, suite};

    use crate::args::GpuAuditArgs;
    use crate::bench::json_str;

    /// The `ptxas` to use: `--ptxas`, else `$PTXAS`, else one on `PATH`.
    fn find_ptxas(a: &GpuAuditArgs) -> Option<PathBuf> {
        if let Some(p) = &a.ptxas {
            return Some(p.clone());
        }
        if let Some(p) = std::env::var_os("PTXAS").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        Command::new("ptxas")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from("ptxas"))
    }

    /// A known finding: `(program, entry, finding)`.
    type Known = (String, String, String);

    /// Reads a baseline: one `program<TAB>entry<TAB>finding` per line, `#`
    /// comments and blank lines ignored.
    fn read_baseline(path: &Path) -> Result<BTreeSet<Known>> {
        let text = birkhoff::read_text(path)
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        let mut out = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let [program, entry, finding] = f[..] else {
                bail!(
                    "{}:{}: expected program<TAB>entry<TAB>finding",
                    path.display(),
                    i + 1
                );
            };
            out.insert((program.into(), entry.into(), finding.into()));
        }
        Ok(out)
    }

    pub fn main(a: &GpuAuditArgs) -> Result<ExitCode> {
        let shapes = AuditShapes {
            tokens: a.tokens,
            hidden: a.hidden,
            streams: a.streams,
            block_tokens: a.block_tokens,
            block_hidden: a.block_hidden,
            heads: a.heads,
        };
        for (flag, v) in [
            ("--tokens", shapes.tokens),
            ("--hidden", shapes.hidden),
            ("--streams", shapes.streams),
            ("--block-tokens", shapes.block_tokens),
            ("--block-hidden", shapes.block_hidden),
            ("--heads", shapes.heads),
        ] {
            if v == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        let known = [
            "spills",
            "serial-matmul",
            "small-grid",
            "replicated-scalar-work",
            "over-floor",
        ];
        for f in &a.allow {
            if !known.contains(&f.as_str()) {
                bail!("--allow {f}: not a finding (one of {})", known.join(", "));
            }
        }
        let ptxas = find_ptxas(a);
        if ptxas.is_none() {
            if a.require_ptxas {
                bail!("no ptxas found (give --ptxas PATH or set PTXAS)");
            }
            eprintln!(
                "note: no ptxas found; registers and spills are not checked (give --ptxas PATH)"
            );
        }
        let device = DeviceModel::h100();
        let programs: Vec<_> = suite(&shapes)?
            .into_iter()
            .filter(|p| a.only.is_empty() || a.only.iter().any(|o| p.name.contains(o.as_str())))
            .collect();
        if programs.is_empty() {
            bail!("--only matched none of the suite's programs");
        }
        let baseline = match &a.baseline {
            Some(p) => read_baseline(p)?,
            None => BTreeSet::new(),
        };
        let mut seen: BTreeSet<Known> = BTreeSet::new();
        let mut failed = 0usize;
        let mut known_count = 0usize;
        let mut json = Vec::new();
        let mut markdown = Vec::new();
        if !a.json {
            println!(
                "GPU audit on {} ({} SMs, {:.3} GHz, {:.0} GB/s): model times, not measurements",
                device.name, device.sms, device.clock_ghz, device.memory_gbps
            );
        }
        for (i, p) in programs.iter().enumerate() {
            eprintln!("[{}/{}] {}", i + 1, programs.len(), p.name);
            let r = audit_program(p, ptxas.as_deref(), &device)?;
            let counted = |_: &LaunchAudit, f: &Finding| {
                (r.mhc || f.name() != "over-floor") && !a.allow.iter().any(|x| x == f.name())
            };
            let key = |l: &LaunchAudit, f: &Finding| -> Known {
                (r.name.clone(), l.launch.entry.clone(), f.name().to_string())
            };
            for (l, f) in r.failures() {
                if counted(l, f) {
                    let k = key(l, f);
                    if baseline.contains(&k) {
                        known_count += 1;
                    } else {
                        failed += 1;
                    }
                    seen.insert(k);
                }
            }
            if a.json {
                json.push(program_json(&r, &device, &a.allow, &baseline));
                continue;
            }
            if a.markdown {
                markdown.push(program_row(&r));
                continue;
            }
            let model: f64 = r.launches.iter().map(|l| l.model_s()).sum();
            let floor: f64 = r.launches.iter().map(|l| l.floor_s).sum();
            println!();
            println!(
                "{}: {} launches, model {:.1} us, memory floor {:.1} us ({:.2}x){}",
                r.name,
                r.launches.len(),
                model * 1e6,
                floor * 1e6,
                r.ratio(),
                if r.mhc {
                    ""
                } else {
                    " [not held to the floor]"
                }
            );
            println!(
                "  {:<34} {:<20} {:>16} {:>4} {:>6} {:>4} {:>6} {:>9} {:>9} {:>9}",
                "entry",
                "mode",
                "grid x block",
                "regs",
                "spill",
                "occ",
                "ptx",
                "issue us",
                "chain us",
                "floor us"
            );
            for l in &r.launches {
                let (regs, spill) = match &l.ptxas {
                    Some(s) => (
                        s.registers.to_string(),
                        (s.spill_stores + s.spill_loads).to_string(),
                    ),
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "  {:<34} {:<20} {:>16} {:>4} {:>6} {:>3.0}% {:>6} {:>9.2} {:>9.2} {:>9.2}",
                    l.launch.entry,
                    l.launch.mode.name(),
                    format!("{} x {}", l.blocks(), l.launch.block),
                    regs,
                    spill,
                    l.occupancy(&device) * 100.0,
                    l.ptx_instructions,
                    l.issue_s * 1e6,
                    l.chain_s * 1e6,
                    l.floor_s * 1e6,
                );
                for f in &l.findings {
                    let tag = if !counted(l, f) {
                        "note"
                    } else if baseline.contains(&key(l, f)) {
                        "known"
                    } else {
                        "FAIL"
                    };
                    println!("      {tag} {f}");
                }
            }
        }
        // A baseline entry of an audited program that no longer occurs was
        // fixed: it fails until removed, so the baseline only shrinks.
        let audited: BTreeSet<&str> = programs.iter().map(|p| p.name.as_str()).collect();
        let stale: Vec<&Known> = baseline
            .iter()
            .filter(|k| audited.contains(k.0.as_str()) && !seen.contains(*k))
            .collect();
        failed += stale.len();
        if let Some(path) = &a.write_baseline {
            let mut text = String::from(
                "# Findings `birkhoff gpu-audit` knows of and does not fail on: program, entry, finding.\n# Remove a line when its finding is fixed (the audit fails on lines that no longer occur).\n",
            );
            for (p, e, f) in &seen {
                text.push_str(&format!("{p}\t{e}\t{f}\n"));
            }
            birkhoff::write_atomic(path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} findings to {}", seen.len(), path.display());
        }
        if a.json {
            println!("[{}]", json.join(",\n"));
        } else if a.markdown {
            println!(
                "| program | launches | model µs | floor µs | model / floor | spill bytes | findings |"
            );
            println!("|---|---:|---:|---:|---:|---:|---|");
            for row in &markdown {
                println!("{row}");
            }
        } else {
            println!();
            for (p, e, f) in &stale {
                println!("FAIL fixed, remove from the baseline: {p}\t{e}\t{f}");
            }
            if failed == 0 {
                println!(
                    "gpu-audit: every check passed ({} programs; {known_count} known findings in the baseline)",
                    programs.len()
                );
            } else {
                println!(
                    "gpu-audit: {failed} finding(s) failed the checks ({known_count} known in the baseline)"
                );
            }
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// One program as a row of the `--markdown` table.
    fn program_row(r: &ProgramAudit) -> String {
        let model: f64 = r.launches.iter().map(LaunchAudit::model_s).sum();
        let floor: f64 = r.launches.iter().map(|l| l.floor_s).sum();
        let spills: Option<u64> = r
            .launches
            .iter()
            .map(|l| l.ptxas.as_ref().map(|s| s.spill_stores + s.spill_loads))
            .sum();
        let mut kinds: Vec<&str> = r.failures().iter().map(|(_, f)| f.name()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.2}{} | {} | {} |",
            r.name,
            r.launches.len(),
            model * 1e6,
            floor * 1e6,
            r.ratio(),
            if r.mhc { "" } else { " (not held)" },
            spills.map_or("—".into(), |s| s.to_string()),
            if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(", ")
            }
        )
    }

    fn program_json(
        r: &ProgramAudit,
        d: &DeviceModel,
        allow: &[String],
        baseline: &BTreeSet<Known>,
    ) -> String {
        let launches: Vec<String> = r
            .launches
            .iter()
            .map(|l| {
                let (regs, stores, loads) = match &l.ptxas {
                    Some(s) => (
                        s.registers.to_string(),
                        s.spill_stores.to_string(),
                        s.spill_loads.to_string(),
                    ),
                    None => ("null".into(), "null".into(), "null".into()),
                };
                let findings: Vec<String> = l
                    .findings
                    .iter()
                    .map(|f| {
                        let counted = (r.mhc || f.name() != "over-floor")
                            && !allow.iter().any(|x| x == f.name());
                        let known = baseline.contains(&(
                            r.name.clone(),
                            l.launch.entry.clone(),
                            f.name().to_string(),
                        ));
                        format!(
                            "{{\"kind\": \"{}\", \"counted\": {counted}, \"known\": {known}, \"message\": {}}}",
                            f.name(),
                            json_str(&f.to_string())
                        )
                    })
                    .collect();
                format!(
                    "{{\"entry\": {}, \"kernel\": {}, \"mode\": \"{}\", \"blocks\": {}, \"block\": {}, \"registers\": {regs}, \"spill_stores\": {stores}, \"spill_loads\": {loads}, \"occupancy\": {:.3}, \"ptx_instructions\": {}, \"warp_instructions\": {:.0}, \"bytes\": {}, \"issue_s\": {:e}, \"chain_s\": {:e}, \"floor_s\": {:e}, \"findings\": [{}]}}",
                    json_str(&l.launch.entry),
                    json_str(&l.launch.kernel),
                    l.launch.mode.name(),
                    l.blocks(),
                    l.launch.block,
                    l.occupancy(d),
                    l.ptx_instructions,
                    l.warp_instructions,
                    l.bytes,
                    l.issue_s,
                    l.chain_s,
                    l.floor_s,
                    findings.join(", ")
                )
            })
            .collect();
        format!(
            "{{\"program\": {}, \"mhc\": {}, \"ratio\": {:.3}, \"launches\": [{}]}}",
            json_str(&r.name),
            r.mhc,
            r.ratio(),
            launches.join(", ")
        )
    }
}
