//! The text parser: the inverse of the printer (`docs/ir.md` has the grammar).
//!
//! Parsing is purely syntactic plus name resolution; types are taken as
//! declared. Run the verifier afterwards ([`parse_and_verify`] does both and
//! reports verifier errors at their line and column).

use std::collections::HashMap;

use crate::error::{Error, ParseError, VerifyErrors};
use crate::graph::{Graph, Node, ValueId};
use crate::literal::{Literal, parse_scalar};
use crate::op::{FloatAttr, InputKind, Op, OpKind, PreMixSpec, SinkhornSpec};
use crate::types::{DType, TensorType, Type};
use crate::verify::verify;

/// A 1-based line and column in IR text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Location {
    /// Line.
    pub line: usize,
    /// Column, in characters.
    pub col: usize,
}

/// Where each value of a parsed graph was defined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceMap {
    /// Location of the `graph` keyword.
    pub graph: Location,
    /// Location of each value's definition, indexed by [`ValueId::index`].
    pub values: Vec<Location>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Value(String),
    Global(String),
    Number(String),
    Punct(char),
    Arrow,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Number(s) => format!("'{s}'"),
            Tok::Value(s) => format!("'%{s}'"),
            Tok::Global(s) => format!("'@{s}'"),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Arrow => "'->'".to_string(),
            Tok::Eof => "end of input".to_string(),
        }
    }
}

struct Token {
    tok: Tok,
    loc: Location,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    // A byte-order mark (editors on Windows write one) is no character of
    // the text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (li, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let loc = Location {
                line: li + 1,
                col: i + 1,
            };
            let take_while = |mut j: usize, f: &dyn Fn(usize, char) -> bool| {
                while j < chars.len() && f(j, chars[j]) {
                    j += 1;
                }
                j
            };
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if c == ';' {
                break;
            }
            let (tok, next) = if c == '%' || c == '@' {
                let j = take_while(i + 1, &|_, c| is_name_char(c));
                if j == i + 1 {
                    return Err(ParseError {
                        line: loc.line,
                        col: loc.col,
                        message: format!("expected a name after '{c}'"),
                    });
                }
                let name: String = chars[i + 1..j].iter().collect();
                (
                    if c == '%' {
                        Tok::Value(name)
                    } else {
                        Tok::Global(name)
                    },
                    j,
                )
            } else if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            {
                let hex = chars.get(i + 1) == Some(&'x');
                let j = take_while(i + 1, &|j, c| {
                    is_name_char(c)
                        || (!hex && (c == '+' || c == '-') && matches!(chars[j - 1], 'e' | 'E'))
                });
                (Tok::Number(chars[i..j].iter().collect()), j)
            } else if c.is_ascii_alphabetic() || c == '_' {
                let j = take_while(i, &|_, c| is_name_char(c));
                (Tok::Ident(chars[i..j].iter().collect()), j)
            } else if c == '-' && chars.get(i + 1) == Some(&'>') {
                (Tok::Arrow, i + 2)
            } else if "()[]{},:=-".contains(c) {
                (Tok::Punct(c), i + 1)
            } else {
                return Err(ParseError {
                    line: loc.line,
                    col: loc.col,
                    // Escaped, so that a NUL or another invisible
                    // character shows in the message.
                    message: format!("unexpected character '{}'", c.escape_debug()),
                });
            };
            out.push(Token { tok, loc });
            i = next;
        }
    }
    let end = Location {
        line: text.lines().count().max(1),
        col: text.lines().last().map_or(1, |l| l.chars().count() + 1),
    };
    out.push(Token {
        tok: Tok::Eof,
        loc: end,
    });
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

type PResult<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn loc(&self) -> Location {
        self.toks[self.pos].loc
    }

    fn bump(&mut self) -> (Tok, Location) {
        let t = &self.toks[self.pos];
        let r = (t.tok.clone(), t.loc);
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        r
    }

    fn err_at<T>(&self, loc: Location, message: impl Into<String>) -> PResult<T> {
        Err(ParseError {
            line: loc.line,
            col: loc.col,
            message: message.into(),
        })
    }

    fn expected<T>(&self, what: &str) -> PResult<T> {
        self.err_at(
            self.loc(),
            format!("expected {what}, found {}", self.peek().describe()),
        )
    }

    fn eat(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> PResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.expected(&format!("'{c}'"))
        }
    }

    fn ident(&mut self, what: &str) -> PResult<(String, Location)> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                let loc = self.bump().1;
                Ok((s, loc))
            }
            _ => self.expected(what),
        }
    }

    fn value_tok(&mut self, what: &str) -> PResult<(String, Location)> {
        match self.peek().clone() {
            Tok::Value(s) => {
                let loc = self.bump().1;
                Ok((s, loc))
            }
            _ => self.expected(what),
        }
    }

    fn usize_tok(&mut self) -> PResult<usize> {
        match self.peek().clone() {
            Tok::Number(s) => {
                let loc = self.loc();
                self.bump();
                s.parse::<usize>()
                    .or_else(|_| self.err_at(loc, format!("'{s}' is not a non-negative integer")))
            }
            _ => self.expected("an integer"),
        }
    }

    fn usize_list(&mut self) -> PResult<Vec<usize>> {
        self.expect('[')?;
        let mut xs = Vec::new();
        if self.eat(']') {
            return Ok(xs);
        }
        loop {
            xs.push(self.usize_tok()?);
            if self.eat(']') {
                return Ok(xs);
            }
            if !self.eat(',') {
                return self.expected("',' or ']'");
            }
        }
    }

    fn tensor_type(&mut self) -> PResult<TensorType> {
        let (name, loc) = self.ident("a type such as f32[4,8]")?;
        let Some(dtype) = DType::from_name(&name) else {
            return self.err_at(
                loc,
                format!("unknown element type '{name}' (expected f32, bf16, f64, i32 or bool)"),
            );
        };
        Ok(TensorType::new(dtype, self.usize_list()?))
    }

    /// A tensor type, or a parenthesized tuple of them.
    fn value_type(&mut self) -> PResult<Type> {
        if !self.eat('(') {
            return Ok(Type::Tensor(self.tensor_type()?));
        }
        let mut parts = vec![self.tensor_type()?];
        while !self.eat(')') {
            if !self.eat(',') {
                return self.expected("',' or ')'");
            }
            parts.push(self.tensor_type()?);
        }
        Ok(Type::Tuple(parts))
    }

    /// One scalar literal's spelling and where it starts.
    fn scalar_text(&mut self) -> PResult<(String, Location)> {
        let loc = self.loc();
        match self.peek().clone() {
            Tok::Number(s) | Tok::Ident(s) => {
                self.bump();
                Ok((s, loc))
            }
            Tok::Punct('-') => {
                self.bump();
                match self.peek().clone() {
                    Tok::Ident(s) => {
                        self.bump();
                        Ok((format!("-{s}"), loc))
                    }
                    _ => self.expected("'inf' after '-'"),
                }
            }
            _ => self.expected("a literal value"),
        }
    }
}

struct GraphParser<'a> {
    p: &'a mut Parser,
    graph: Graph,
    map: SourceMap,
    names: HashMap<String, ValueId>,
}

impl GraphParser<'_> {
    fn define(&mut self, name: String, loc: Location, node: Node) -> PResult<ValueId> {
        if self.names.contains_key(&name) {
            return self
                .p
                .err_at(loc, format!("value %{name} is defined twice"));
        }
        let is_input = matches!(node.op, Op::Input { .. });
        let v = self.graph.push(node);
        if !is_input {
            // The value prints as written, even if not as its index.
            self.graph.set_label(v, name.clone());
        }
        self.map.values.push(loc);
        self.names.insert(name, v);
        Ok(v)
    }

    fn lookup(&self, name: &str, loc: Location) -> PResult<ValueId> {
        match self.names.get(name) {
            Some(&v) => Ok(v),
            None => self.p.err_at(loc, format!("undefined value %{name}")),
        }
    }

    fn signature(&mut self) -> PResult<Vec<(String, TensorType, Location)>> {
        self.p.expect('(')?;
        if !self.p.eat(')') {
            loop {
                let kind = match self.p.peek() {
                    Tok::Ident(s) if s == "param" => {
                        self.p.bump();
                        InputKind::Param
                    }
                    _ => InputKind::Data,
                };
                let (name, loc) = self.p.value_tok("an input such as %x")?;
                self.p.expect(':')?;
                let ty = self.p.tensor_type()?;
                if self.names.contains_key(&name) {
                    return self
                        .p
                        .err_at(loc, format!("input %{name} is declared twice"));
                }
                let v = self.graph.add_input(name.clone(), kind, ty);
                self.map.values.push(loc);
                self.names.insert(name, v);
                if self.p.eat(')') {
                    break;
                }
                if !self.p.eat(',') {
                    return self.p.expected("',' or ')'");
                }
            }
        }
        if *self.p.peek() != Tok::Arrow {
            return self.p.expected("'->'");
        }
        self.p.bump();
        self.p.expect('(')?;
        let mut outs = Vec::new();
        if self.p.eat(')') {
            return Ok(outs);
        }
        loop {
            let (name, loc) = self.p.ident("an output name")?;
            self.p.expect(':')?;
            outs.push((name, self.p.tensor_type()?, loc));
            if self.p.eat(')') {
                return Ok(outs);
            }
            if !self.p.eat(',') {
                return self.p.expected("',' or ')'");
            }
        }
    }

    fn statement(&mut self) -> PResult<()> {
        let (name, loc) = self
            .p
            .value_tok("a statement such as '%1 = add %0, %0 : f32[4]' or 'return'")?;
        self.p.expect('=')?;
        let (mnemonic, op_loc) = self.p.ident("an op name")?;
        if mnemonic == "const" {
            let mut texts = Vec::new();
            let dense = self.p.eat('[');
            if dense {
                loop {
                    texts.push(self.p.scalar_text()?);
                    if self.p.eat(']') {
                        break;
                    }
                    if !self.p.eat(',') {
                        return self.p.expected("',' or ']'");
                    }
                }
            } else {
                texts.push(self.p.scalar_text()?);
            }
            self.p.expect(':')?;
            let ty_loc = self.p.loc();
            let ty = self.p.tensor_type()?;
            let mut values = Vec::with_capacity(texts.len());
            for (t, l) in &texts {
                values.push(parse_scalar(ty.dtype, t).or_else(|m| self.p.err_at(*l, m))?);
            }
            let lit = if dense {
                match Literal::dense(ty.clone(), values) {
                    Some(l) => l,
                    None => {
                        return self.p.err_at(
                            ty_loc,
                            format!(
                                "{} values given for {ty}, which has {} elements",
                                texts.len(),
                                ty.num_elements()
                            ),
                        );
                    }
                }
            } else {
                Literal::splat(ty.clone(), values[0])
            };
            self.define(
                name,
                loc,
                Node {
                    op: Op::Const(lit),
                    args: vec![],
                    ty: Type::Tensor(ty),
                },
            )?;
            return Ok(());
        }

        // Operands first, then attributes.
        let mut args = Vec::new();
        let mut attrs: Vec<Attr> = Vec::new();
        let mut first = true;
        while *self.p.peek() != Tok::Punct(':') {
            if !first && !self.p.eat(',') {
                return self.p.expected("',' or ':'");
            }
            first = false;
            match self.p.peek().clone() {
                Tok::Value(v) if attrs.is_empty() => {
                    let l = self.p.bump().1;
                    args.push(self.lookup(&v, l)?);
                }
                Tok::Ident(key) => {
                    let l = self.p.bump().1;
                    if attrs.iter().any(|a| a.key == key) {
                        return self.p.err_at(l, format!("attribute '{key}' given twice"));
                    }
                    let value = if self.p.eat('=') {
                        Some(if *self.p.peek() == Tok::Punct('[') {
                            AttrValue::List(self.p.usize_list()?)
                        } else {
                            let (word, at) = self.p.scalar_text()?;
                            AttrValue::Word(word, at)
                        })
                    } else {
                        None
                    };
                    attrs.push(Attr { key, loc: l, value });
                }
                _ => {
                    return self.p.expected(if attrs.is_empty() {
                        "an operand or attribute"
                    } else {
                        "an attribute"
                    });
                }
            }
        }
        self.p.expect(':')?;
        let ty = self.p.value_type()?;
        let op = {
            let mut attrs = Attrs {
                p: self.p,
                mnemonic: &mnemonic,
                loc: op_loc,
                attrs,
            };
            let op = build_op(&mut attrs, &ty)?;
            if let Some(a) = attrs.attrs.first() {
                return self
                    .p
                    .err_at(a.loc, format!("{mnemonic} takes no attribute '{}'", a.key));
            }
            op
        };
        self.define(name, loc, Node { op, args, ty })?;
        Ok(())
    }

    fn parse(mut self) -> PResult<(Graph, SourceMap)> {
        self.map.graph = self.p.loc();
        match self.p.ident("'graph'")? {
            (kw, _) if kw == "graph" => {}
            (_, l) => return self.p.err_at(l, "expected 'graph'"),
        }
        let name = match self.p.peek().clone() {
            Tok::Global(n) => {
                self.p.bump();
                n
            }
            _ => return self.p.expected("a graph name such as @main"),
        };
        self.graph.set_name(name);
        let outs = self.signature()?;
        self.p.expect('{')?;
        while !matches!(self.p.peek(), Tok::Ident(kw) if kw == "return") {
            self.statement()?;
        }
        let ret_loc = self.p.bump().1;
        let mut returned = Vec::new();
        while *self.p.peek() != Tok::Punct('}') {
            if !returned.is_empty() && !self.p.eat(',') {
                return self.p.expected("',' or '}'");
            }
            let (v, l) = self.p.value_tok("a returned value")?;
            returned.push((self.lookup(&v, l)?, l));
        }
        self.p.expect('}')?;
        if returned.len() != outs.len() {
            return self.p.err_at(
                ret_loc,
                format!(
                    "returns {} value(s) but the signature declares {} output(s)",
                    returned.len(),
                    outs.len()
                ),
            );
        }
        for ((name, ty, _), (v, l)) in outs.into_iter().zip(returned) {
            // The returned value may be a tuple, which no output can hold.
            let got = self.graph.value_type(v);
            if got.as_tensor() != Some(&ty) {
                return self.p.err_at(
                    l,
                    format!(
                        "output '{name}' is declared {ty} but the returned value has type {got}"
                    ),
                );
            }
            self.graph.add_output(name, v);
        }
        Ok((self.graph, self.map))
    }
}

/// Parses every graph in `text`, with where each value was defined.
pub fn parse_module_with_locations(text: &str) -> Result<Vec<(Graph, SourceMap)>, ParseError> {
    let mut p = Parser {
        toks: lex(text)?,
        pos: 0,
    };
    let mut graphs = Vec::new();
    while *p.peek() != Tok::Eof {
        let gp = GraphParser {
            p: &mut p,
            graph: Graph::new(""),
            map: SourceMap::default(),
            names: HashMap::new(),
        };
        let (g, map): (Graph, SourceMap) = gp.parse()?;
        // Graphs are named to be found: two of one name would be one lost.
        if let Some((_, first)) = graphs
            .iter()
            .find(|(other, _): &&(Graph, SourceMap)| other.name() == g.name())
        {
            return Err(ParseError {
                line: map.graph.line,
                col: map.graph.col,
                message: format!(
                    "graph @{} is defined twice (first at line {})",
                    g.name(),
                    first.graph.line
                ),
            });
        }
        graphs.push((g, map));
    }
    Ok(graphs)
}

/// Parses every graph in `text` (unverified).
pub fn parse_module(text: &str) -> Result<Vec<Graph>, ParseError> {
    Ok(parse_module_with_locations(text)?
        .into_iter()
        .map(|(g, _)| g)
        .collect())
}

/// Parses text holding exactly one graph (unverified).
pub fn parse_graph(text: &str) -> Result<Graph, ParseError> {
    let mut graphs = parse_module_with_locations(text)?;
    match graphs.len() {
        1 => Ok(graphs.remove(0).0),
        n => Err(ParseError {
            line: 1,
            col: 1,
            message: format!("expected exactly one graph, found {n}"),
        }),
    }
}

/// Verifies a parsed graph, attaching each error's source location.
pub fn verify_located(graph: &Graph, map: &SourceMap) -> Result<(), VerifyErrors> {
    verify(graph).map_err(|mut errs| {
        for e in &mut errs.errors {
            let loc = e
                .value
                .and_then(|v| map.values.get(v.index()))
                .copied()
                .unwrap_or(map.graph);
            e.location = Some((loc.line, loc.col));
        }
        errs
    })
}

/// Parses and verifies every graph in `text`.
pub fn parse_and_verify(text: &str) -> Result<Vec<Graph>, Error> {
    let mut out = Vec::new();
    for (g, map) in parse_module_with_locations(text)? {
        verify_located(&g, &map)?;
        out.push(g);
    }
    Ok(out)
}

/// An attribute as written: `key`, `key=word` or `key=[list]`.
struct Attr {
    key: String,
    loc: Location,
    value: Option<AttrValue>,
}

enum AttrValue {
    List(Vec<usize>),
    /// A number or a name, with where it was written.
    Word(String, Location),
}

/// The attributes of one op, taken one by one as the op is built.
struct Attrs<'p> {
    p: &'p Parser,
    mnemonic: &'p str,
    loc: Location,
    attrs: Vec<Attr>,
}

impl Attrs<'_> {
    fn take(&mut self, key: &str) -> PResult<(Location, Option<AttrValue>)> {
        match self.attrs.iter().position(|a| a.key == key) {
            Some(i) => {
                let a = self.attrs.remove(i);
                Ok((a.loc, a.value))
            }
            None => self.p.err_at(
                self.loc,
                format!("{} needs attribute '{key}'", self.mnemonic),
            ),
        }
    }

    fn list(&mut self, key: &str) -> PResult<Vec<usize>> {
        match self.take(key)? {
            (_, Some(AttrValue::List(v))) => Ok(v),
            // Non-canonical but accepted: one integer for a one-element list.
            (_, Some(AttrValue::Word(w, at))) => Ok(vec![self.integer(&w, at)?]),
            (l, None) => self
                .p
                .err_at(l, format!("attribute '{key}' needs a list such as [0,1]")),
        }
    }

    /// The value of a `key=word` attribute and where the value was written.
    fn word(&mut self, key: &str, what: &str) -> PResult<(Location, String)> {
        match self.take(key)? {
            (_, Some(AttrValue::Word(w, at))) => Ok((at, w)),
            (l, _) => self.p.err_at(l, format!("attribute '{key}' needs {what}")),
        }
    }

    fn usize(&mut self, key: &str) -> PResult<usize> {
        match self.take(key)? {
            (_, Some(AttrValue::Word(w, at))) => self.integer(&w, at),
            // Non-canonical but accepted: a one-element list for an integer.
            (_, Some(AttrValue::List(v))) if v.len() == 1 => Ok(v[0]),
            (l, _) => self
                .p
                .err_at(l, format!("attribute '{key}' needs an integer")),
        }
    }

    /// A non-negative integer spelled `w` at `at`.
    fn integer(&self, w: &str, at: Location) -> PResult<usize> {
        if !w.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            return self
                .p
                .err_at(at, format!("expected an integer, found '{w}'"));
        }
        w.parse().or_else(|_| {
            self.p
                .err_at(at, format!("'{w}' is not a non-negative integer"))
        })
    }

    fn float(&mut self, key: &str) -> PResult<FloatAttr> {
        let (l, w) = self.word(key, "a number")?;
        parse_scalar(DType::F64, &w).map(FloatAttr).or_else(|_| {
            self.p
                .err_at(l, format!("attribute '{key}' needs a number, got '{w}'"))
        })
    }

    fn flag(&mut self, key: &str) -> PResult<bool> {
        match self.attrs.iter().position(|a| a.key == key) {
            None => Ok(false),
            Some(i) => {
                let a = self.attrs.remove(i);
                if a.value.is_some() {
                    return self
                        .p
                        .err_at(a.loc, format!("'{key}' is a flag and takes no value"));
                }
                Ok(true)
            }
        }
    }

    fn sinkhorn(&mut self) -> PResult<SinkhornSpec> {
        let (l, w) = self.word("variant", "paper or tilekernels")?;
        let variant = w.parse().or_else(|m: String| self.p.err_at(l, m))?;
        Ok(SinkhornSpec {
            variant,
            iters: self.usize("iters")?,
            eps: self.float("eps")?,
        })
    }

    fn pre_mix(&mut self) -> PResult<PreMixSpec> {
        Ok(PreMixSpec {
            norm_eps: self.float("norm_eps")?,
            pre_eps: self.float("pre_eps")?,
            post_mult: self.float("post_mult")?,
            sinkhorn: self.sinkhorn()?,
        })
    }
}

/// Builds the op `a.mnemonic` from its attributes; `ty` is the declared
/// result type, which supplies the target of reshape, broadcast, cast and iota.
fn build_op(a: &mut Attrs<'_>, ty: &Type) -> PResult<Op> {
    let mnemonic = a.mnemonic;
    let tensor = |a: &Attrs<'_>| match ty {
        Type::Tensor(t) => Ok(t.clone()),
        Type::Tuple(_) => {
            a.p.err_at(a.loc, format!("{mnemonic} produces a tensor, not a tuple"))
        }
    };
    Ok(match mnemonic {
        "input" | "param" => {
            return a.p.err_at(
                a.loc,
                "inputs and params are declared in the graph signature",
            );
        }
        "iota" => Op::Iota {
            axis: a.usize("axis")?,
            ty: tensor(a)?,
        },
        "concat" => Op::Concat {
            axis: a.usize("axis")?,
        },
        "reduce_sum" => Op::ReduceSum {
            axes: a.list("axes")?,
            keepdims: a.flag("keepdims")?,
        },
        "reduce_max" => Op::ReduceMax {
            axes: a.list("axes")?,
            keepdims: a.flag("keepdims")?,
        },
        "permute" => Op::Permute {
            perm: a.list("perm")?,
        },
        "slice" => {
            let start = a.list("start")?;
            Op::Slice {
                start,
                end: a.list("end")?,
            }
        }
        "reshape" => Op::Reshape {
            shape: tensor(a)?.shape,
        },
        "broadcast" => Op::Broadcast {
            shape: tensor(a)?.shape,
        },
        "cast" => Op::Cast {
            dtype: tensor(a)?.dtype,
        },
        "row_norm" => Op::RowNorm {
            eps: a.float("eps")?,
        },
        "col_norm" => Op::ColNorm {
            eps: a.float("eps")?,
        },
        "rms_norm" => Op::RmsNorm {
            eps: a.float("eps")?,
        },
        "softmax" => Op::Softmax {
            axis: a.usize("axis")?,
        },
        "sinkhorn" => Op::Sinkhorn(a.sinkhorn()?),
        "sinkhorn_grad" => Op::SinkhornGrad(a.sinkhorn()?),
        "mhc_pre" => Op::MhcPre(a.pre_mix()?),
        "mhc_pre_projected" => Op::MhcPreProjected(a.pre_mix()?),
        "mhc_pre_grad" => Op::MhcPreGrad(a.pre_mix()?),
        "hc_pre" => Op::HcPre {
            norm_eps: a.float("norm_eps")?,
        },
        "get" => Op::Get {
            index: a.usize("index")?,
        },
        // The ops without attributes, by mnemonic alone.
        _ => match OpKind::ALL
            .iter()
            .find(|k| k.mnemonic() == mnemonic)
            .and_then(|k| k.plain())
        {
            Some(op) => op,
            None => return a.p.err_at(a.loc, format!("unknown op '{mnemonic}'")),
        },
    })
}
