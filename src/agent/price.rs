//! Money: a mode's `price` per million tokens, and the dollar amounts of budgets.
//!
//! Rules: amounts are finite numbers, 0 or more; anything else is refused while the file is
//! read, so the error carries the value's position. A run's cost from its tokens is
//! `(input - cached) × input + cached × cached_input + output × output`, per million tokens;
//! `cached_input_per_mtok` defaults to the input price.

use serde::{Deserialize, Deserializer, de};

use super::Tokens;

/// A number of US dollars (or dollars per million tokens): finite and not negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Usd(pub f64);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if value.is_finite() && value >= 0.0 {
            Ok(Usd(value))
        } else {
            Err(de::Error::custom(format!(
                "{value} is not an amount of dollars (expected a number, 0 or more)"
            )))
        }
    }
}

/// `price = { input_per_mtok, output_per_mtok, cached_input_per_mtok }` of a mode.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: Usd,
    pub output_per_mtok: Usd,
    pub cached_input_per_mtok: Option<Usd>,
}

impl Price {
    /// The cost of a run's tokens, in dollars.
    pub fn cost(&self, tokens: Tokens) -> f64 {
        let cached = tokens.cached.min(tokens.input);
        let fresh = (tokens.input - cached) as f64;
        let cached_price = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok).0;
        (fresh * self.input_per_mtok.0
            + cached as f64 * cached_price
            + tokens.output as f64 * self.output_per_mtok.0)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(text: &str) -> Result<Price, String> {
        #[derive(Deserialize)]
        struct Front {
            price: Price,
        }
        toml::from_str::<Front>(text)
            .map(|f| f.price)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn cost_from_tokens() {
        let p = price(
            "price = { input_per_mtok = 3, output_per_mtok = 15.0, cached_input_per_mtok = 0.3 }",
        )
        .unwrap();
        let tokens = Tokens {
            input: 1_200,
            output: 340,
            cached: 800,
        };
        // 400 fresh × 3 + 800 cached × 0.3 + 340 × 15, per million
        let expected = (400.0 * 3.0 + 800.0 * 0.3 + 340.0 * 15.0) / 1e6;
        assert!((p.cost(tokens) - expected).abs() < 1e-12);
    }

    #[test]
    fn cached_defaults_to_the_input_price() {
        let p = price("price = { input_per_mtok = 2, output_per_mtok = 8 }").unwrap();
        let tokens = Tokens {
            input: 1_000_000,
            output: 0,
            cached: 500_000,
        };
        assert!((p.cost(tokens) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn negative_and_non_numbers_are_refused() {
        let err = price("price = { input_per_mtok = -1, output_per_mtok = 8 }").unwrap_err();
        assert!(err.contains("0 or more"), "{err}");
        let err = price("price = { input_per_mtok = \"3\", output_per_mtok = 8 }").unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = price("price = { input_per_mtok = nan, output_per_mtok = 8 }").unwrap_err();
        assert!(err.contains("0 or more"), "{err}");
        let err = price("price = { input = 1, output_per_mtok = 8 }").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
