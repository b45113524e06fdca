//! Numeric equivalence for the `run` option: the input graph and the
//! transformed program on the same seeded random inputs.

use birkhoff_dsl::random_inputs;
use birkhoff_dsl::zoo::Inits;
use birkhoff_ir::tolerance::Rule;
use birkhoff_ir::{Graph, InterpOptions, Tensor, interpret};

use crate::format::Settings;
use crate::runners::Candidate;

/// Interprets the input graph and runs the candidate on `s.trials` sets of
/// seeded random inputs (every input drawn from `s.init`), and compares
/// every output.
pub(crate) fn equivalent(before: &Graph, after: &Candidate, s: &Settings) -> Result<(), String> {
    let opts = InterpOptions::default();
    let inits: Inits = before
        .inputs()
        .iter()
        .filter_map(|&v| before.input_name(v))
        .map(|name| (name.to_string(), s.init.clone()))
        .collect();
    for trial in 0..s.trials {
        let seed = s.seed.wrapping_add(trial as u64);
        let inputs = random_inputs(before, &inits, seed);
        let want = interpret(before, &inputs, &opts).map_err(|e| format!("input graph: {e}"))?;
        let got = after.run(&inputs)?;
        for ((name, w), (gname, g)) in want.iter().zip(&got) {
            if name != gname {
                return Err(format!("outputs differ: '{name}' vs '{gname}'"));
            }
            compare(w, g, rule(w, s)).map_err(|m| format!("output '{name}' (seed {seed}): {m}"))?;
        }
    }
    Ok(())
}

/// The rule an output is held to: the workspace's rule for two programs
/// that round at different points (`birkhoff verify`'s), with `set rtol`
/// replacing its `rtol`.
fn rule(want: &Tensor, s: &Settings) -> Rule {
    let mut rule = Rule::rounded_apart(want.dtype());
    if let Some(rtol) = s.rtol {
        rule.tolerance.rtol = rtol;
    }
    rule
}

/// Whether `got` agrees with `want` under `rule`: the same type, every
/// element within the bound.
fn compare(want: &Tensor, got: &Tensor, rule: Rule) -> Result<(), String> {
    if want.ty() != got.ty() {
        return Err(format!("type {} vs {}", got.ty(), want.ty()));
    }
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    let c = rule.compare(&g, &w);
    match c.worst_failure {
        None => Ok(()),
        Some(i) => Err(format!(
            "{} of {} elements differ beyond atol {:e} + rtol {:e} · max(|want|, {:e}); \
             worst at flat index {i}: got {:e}, want {:e}",
            c.failures,
            w.len(),
            rule.tolerance.atol,
            rule.tolerance.rtol,
            c.floor,
            g[i],
            w[i]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use birkhoff_ir::DType;
    use birkhoff_ir::tolerance::Tolerance;

    #[test]
    fn outputs_compare_under_the_rule() {
        let t = |v: &[f64]| {
            Tensor::from_f64(birkhoff_ir::TensorType::new(DType::F64, [v.len()]), v).unwrap()
        };
        let rule = |rtol: f64| Rule::per_element(Tolerance::new(0.0, rtol));
        let want = t(&[1e3, 0.5, f64::NAN, f64::INFINITY]);
        assert!(compare(&want, &want, rule(0.0)).is_ok());
        let near = t(&[1e3 * (1.0 + 2e-9), 0.5, f64::NAN, f64::INFINITY]);
        let msg = compare(&want, &near, rule(1e-9)).unwrap_err();
        assert!(msg.starts_with("1 of 4 elements differ"), "{msg}");
        assert!(msg.contains("worst at flat index 0"), "{msg}");
        assert!(compare(&want, &near, rule(1e-8)).is_ok());
        assert!(compare(&want, &t(&[1e3, 0.5, 0.0, f64::INFINITY]), rule(1.0)).is_err());
        assert!(compare(&want, &t(&[1e3, 0.5, f64::NAN, f64::MAX]), rule(1.0)).is_err());
        // The default for f64 outputs is the reduction row against a
        // thousandth of the peak: 0.5 + 1e-7 is off by 2e-7 relative, far
        // outside 1e-10.
        let off = t(&[1e3, 0.5 + 1e-7, f64::NAN, f64::INFINITY]);
        let settings = Settings::default();
        assert!(compare(&want, &off, super::rule(&want, &settings)).is_err());
        let loose = Settings {
            rtol: Some(1e-6),
            ..Settings::default()
        };
        assert!(compare(&want, &off, super::rule(&want, &loose)).is_ok());
    }

    #[test]
    fn equivalence_catches_a_different_graph() {
        let parse = |op: &str| {
            birkhoff_ir::parse_graph(&format!(
                "graph @g(%x: f32[4], %y: f32[4]) -> (z: f32[4]) {{\n\
                 %2 = {op} %x, %y : f32[4]\n\
                 return %2\n}}"
            ))
            .unwrap()
        };
        let settings = Settings::default();
        assert!(equivalent(&parse("add"), &Candidate::Graph(parse("add")), &settings).is_ok());
        let err =
            equivalent(&parse("add"), &Candidate::Graph(parse("sub")), &settings).unwrap_err();
        assert!(err.starts_with("output 'z' (seed 0)"), "{err}");
    }
}
