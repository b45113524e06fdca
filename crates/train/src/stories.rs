//! The built-in corpus's text: a small probabilistic grammar of short
//! English-like stories (people, animals and objects moving between places,
//! giving things to each other), questions answered from the sentence
//! before, counting and small sums with their answers.
//!
//! Everything is drawn from one seed with [`Rng`], whose stream never
//! changes, so the same seed gives the same bytes on every machine.

use birkhoff::dsl::Rng;

const NAMES: &[&str] = &[
    "Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "June", "Kai", "Lena",
];
const ANIMALS: &[&str] = &[
    "cat", "dog", "fox", "bird", "horse", "mouse", "goat", "owl", "rabbit", "duck",
];
const PEOPLE: &[&str] = &[
    "farmer", "baker", "sailor", "teacher", "king", "queen", "child", "doctor", "painter",
];
const THINGS: &[&str] = &[
    "apple", "ball", "boat", "book", "box", "bread", "cake", "coin", "cup", "hat", "key", "lamp",
    "letter", "map", "ring", "stone", "egg", "umbrella",
];
const PLACES: &[&str] = &[
    "garden", "house", "market", "river", "forest", "hill", "village", "kitchen", "school",
    "harbor", "field", "bridge",
];
const ADJECTIVES: &[&str] = &[
    "red", "small", "old", "happy", "quiet", "big", "green", "tired", "clever", "brave", "cold",
    "bright", "little", "yellow",
];
const TAKE: &[&str] = &[
    "found", "saw", "took", "carried", "lost", "washed", "hid", "painted",
];
const GO: &[&str] = &["walked", "ran", "went", "hurried", "came back"];
const REST: &[&str] = &[
    "slept", "sang", "waited", "smiled", "laughed", "sat down", "rested",
];
const ADVERBS: &[&str] = &[
    "slowly",
    "quickly",
    "quietly",
    "happily",
    "again",
    "for a while",
];
const TIMES: &[&str] = &[
    "In the morning",
    "At night",
    "After lunch",
    "Before dinner",
    "On Monday",
    "One day",
    "Later",
    "Then",
];
const NUMBERS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
];

/// Picks one item uniformly.
fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

/// `a`/`an` for a word.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A character: a name, or "the [adjective] animal/person".
fn character(rng: &mut Rng) -> String {
    match rng.next_u64() % 3 {
        0 => pick(rng, NAMES).to_string(),
        1 => format!("the {}", pick(rng, ANIMALS)),
        _ => format!("the {} {}", pick(rng, ADJECTIVES), pick(rng, PEOPLE)),
    }
}

/// "a red cup" or "an apple".
fn thing(rng: &mut Rng) -> (String, &'static str) {
    let noun = pick(rng, THINGS);
    if rng.next_u64().is_multiple_of(2) {
        let adj = pick(rng, ADJECTIVES);
        (format!("{} {adj} {noun}", article(adj)), noun)
    } else {
        (format!("{} {noun}", article(noun)), noun)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One paragraph of 2–5 sentences about one character, or a line of
/// counting or sums.
fn paragraph(rng: &mut Rng, out: &mut String) {
    match rng.next_u64() % 10 {
        // Small sums and differences with their answers.
        0 => {
            let mut parts = Vec::new();
            for _ in 0..3 {
                let (a, b) = (rng.next_u64() % 10, rng.next_u64() % 10);
                parts.push(if rng.next_u64().is_multiple_of(2) || a < b {
                    format!("{a} + {b} = {}.", a + b)
                } else {
                    format!("{a} - {b} = {}.", a - b)
                });
            }
            out.push_str(&parts.join(" "));
        }
        // Counting in words from a random start.
        1 => {
            let start = (rng.next_u64() % 6) as usize;
            let len = 3 + (rng.next_u64() % 5) as usize;
            let words: Vec<&str> = NUMBERS[start..(start + len).min(NUMBERS.len())].to_vec();
            out.push_str(&capitalize(&words.join(", ")));
            out.push('.');
        }
        _ => {
            let who = character(rng);
            let mut where_ = pick(rng, PLACES);
            let mut sentences = Vec::new();
            let count = 2 + rng.next_u64() % 4;
            for _ in 0..count {
                let s = match rng.next_u64() % 6 {
                    0 => {
                        where_ = pick(rng, PLACES);
                        format!("{} {} to the {where_}.", who, pick(rng, GO))
                    }
                    1 => format!("{who} {} {}.", pick(rng, REST), pick(rng, ADVERBS)),
                    2 => {
                        let (obj, _) = thing(rng);
                        format!("{who} gave {obj} to {}.", character(rng))
                    }
                    3 => {
                        // A question answered from the sentence before it.
                        let (obj, noun) = thing(rng);
                        let place = pick(rng, PLACES);
                        format!(
                            "{who} put {obj} in the {place}. Where is the {noun}? The {noun} is in the {place}."
                        )
                    }
                    4 => format!("{}, {who} was in the {where_}.", pick(rng, TIMES)),
                    _ => {
                        let (obj, _) = thing(rng);
                        format!("{who} {} {obj} in the {where_}.", pick(rng, TAKE))
                    }
                };
                sentences.push(capitalize(&s));
            }
            out.push_str(&sentences.join(" "));
        }
    }
    out.push('\n');
}

/// At least `bytes` bytes of generated ASCII text from `seed`: paragraphs
/// (one per line) until the length is reached.
pub fn generate_text(seed: u64, bytes: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 512);
    while out.len() < bytes {
        paragraph(&mut rng, &mut out);
    }
    out.into_bytes()
}
