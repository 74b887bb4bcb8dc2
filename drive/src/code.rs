//! Pairing codes: `NAMEPLATE-word-word-word`, as magic-wormhole writes
//! them. The nameplate (1 to 9999) only finds the mailbox slot; the three
//! words (24 bits, from [`WORDS`]) are the password of the key exchange.
//! The mailbox allows one guess per code, so 24 bits are enough: an
//! attacker's one try succeeds once in 16.7 million, and burns the code.

use rand::Rng;

use crate::error::{Error, Result};

/// How many words a code has.
pub const CODE_WORDS: usize = 3;

/// The largest nameplate.
pub const MAX_NAMEPLATE: u16 = 9999;

/// A pairing code.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    /// The mailbox slot.
    pub nameplate: u16,
    words: [u8; CODE_WORDS],
}

impl std::fmt::Debug for Code {
    /// The words are the secret: never printed by `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Code({}-…)", self.nameplate)
    }
}

impl Code {
    /// A fresh code for `nameplate`, its words drawn from `rng`.
    pub fn new(nameplate: u16, rng: &mut impl Rng) -> Code {
        Code { nameplate, words: rng.random() }
    }

    /// The words, joined: the key exchange's password.
    pub(crate) fn password(&self) -> Vec<u8> {
        self.words.iter().map(|&w| WORDS[usize::from(w)]).collect::<Vec<_>>().join("-").into_bytes()
    }

    /// Parse what a person typed: `472-apple-river-stone`, any case, with
    /// dashes or spaces between the parts.
    pub fn parse(s: &str) -> Result<Code> {
        let bad = |why: String| Error::BadCode(why);
        let lower = s.trim().to_lowercase();
        let parts: Vec<&str> = lower.split(|c: char| c == '-' || c.is_whitespace()).filter(|p| !p.is_empty()).collect();
        let Some((first, rest)) = parts.split_first() else {
            return Err(bad(
                "it is empty: give the code `ionshard drive pair` printed, like 472-apple-river-stone".into()
            ));
        };
        let nameplate = first
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=MAX_NAMEPLATE).contains(n))
            .ok_or_else(|| bad(format!("{first:?} is not its number (1 to {MAX_NAMEPLATE}) at the start")))?;
        if rest.len() != CODE_WORDS {
            return Err(bad(format!("it has {} word(s) after the number; a code has {CODE_WORDS}", rest.len())));
        }
        let mut words = [0u8; CODE_WORDS];
        for (slot, w) in words.iter_mut().zip(rest) {
            let i = WORDS.binary_search(w).map_err(|_| bad(format!("{w:?} is not a word codes use (a typo?)")))?;
            *slot = i as u8;
        }
        Ok(Code { nameplate, words })
    }

    /// The code as a person reads it.
    pub fn reveal(&self) -> String {
        format!("{}-{}", self.nameplate, String::from_utf8_lossy(&self.password()))
    }
}

/// The words codes are made of: 256, sorted (a word's index is its byte).
pub const WORDS: [&str; 256] = [
    "acorn", "actor", "adobe", "agent", "alarm", "album", "alley", "amber", "anchor", "angle", "ankle", "apple",
    "apron", "arena", "arrow", "aspen", "atlas", "attic", "autumn", "bacon", "badge", "baker", "bamboo", "banjo",
    "barley", "basin", "beach", "beacon", "beetle", "bench", "berry", "biscuit", "bison", "blade", "blanket",
    "blossom", "bonnet", "border", "bottle", "bramble", "brick", "bridge", "broom", "bubble", "bucket", "buffalo",
    "bugle", "butter", "button", "cabin", "cactus", "camel", "candle", "canoe", "canvas", "canyon", "carpet", "carrot",
    "castle", "cedar", "cellar", "cherry", "chimney", "cider", "circus", "clover", "cobalt", "cocoa", "comet",
    "copper", "coral", "cotton", "cradle", "crater", "cricket", "crystal", "cupboard", "daisy", "dancer", "delta",
    "desert", "diamond", "dolphin", "donkey", "dragon", "drum", "dune", "eagle", "earth", "easel", "echo", "eclipse",
    "elbow", "ember", "engine", "fable", "falcon", "feather", "fern", "fiddle", "flute", "forest", "fossil",
    "fountain", "fox", "galaxy", "garden", "garlic", "gazelle", "gecko", "ginger", "glacier", "glove", "goblet",
    "granite", "grape", "gravel", "hammock", "harbor", "harp", "harvest", "hazel", "hedge", "helmet", "heron",
    "hollow", "honey", "horizon", "iceberg", "igloo", "island", "ivory", "jacket", "jaguar", "jasmine", "jelly",
    "jigsaw", "jungle", "kayak", "kernel", "kettle", "kitten", "koala", "ladder", "lagoon", "lantern", "laurel",
    "lemon", "lentil", "lilac", "linen", "lizard", "lobster", "locket", "lotus", "magnet", "mango", "maple", "marble",
    "meadow", "melon", "meteor", "mirror", "mitten", "monkey", "moose", "mosaic", "muffin", "nectar", "needle",
    "nickel", "noodle", "nutmeg", "oasis", "ocean", "olive", "onion", "orbit", "orchid", "otter", "oyster", "paddle",
    "palace", "panda", "parrot", "pebble", "pepper", "piano", "pickle", "pillow", "pine", "planet", "plaza", "plum",
    "pocket", "pony", "poppy", "pretzel", "puzzle", "quartz", "quill", "rabbit", "radish", "raven", "reef", "ribbon",
    "river", "robin", "rocket", "saddle", "saffron", "salmon", "sapphire", "scarf", "shadow", "shell", "silver",
    "sketch", "sparrow", "spider", "spruce", "squash", "statue", "stone", "sugar", "summit", "sunset", "swan",
    "tablet", "teapot", "thistle", "thunder", "tiger", "timber", "tomato", "topaz", "tractor", "tulip", "tundra",
    "tunnel", "turtle", "umbrella", "valley", "velvet", "violin", "wagon", "walnut", "walrus", "whistle", "willow",
    "window", "winter", "wizard", "yarrow", "zebra", "zephyr",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_typos_are_refused_with_the_reason() {
        assert!(WORDS.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        let mut rng = rand::rng();
        for _ in 0..100 {
            let c = Code::new(rng.random_range(1..=MAX_NAMEPLATE), &mut rng);
            assert_eq!(Code::parse(&c.reveal()).expect("parse"), c);
            assert_eq!(Code::parse(&c.reveal().to_uppercase().replace('-', " ")).expect("parse"), c);
        }
        let err = |s: &str| Code::parse(s).expect_err(s).to_string();
        assert!(err("").contains("empty"));
        assert!(err("0-apple-river-stone").contains("number"));
        assert!(err("10000-apple-river-stone").contains("number"));
        assert!(err("12-apple-river").contains("3"));
        assert!(err("12-apple-river-stoen").contains("stoen"));
        assert!(!format!("{:?}", Code::parse("12-apple-river-stone").expect("code")).contains("apple"));
    }
}
