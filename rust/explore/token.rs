//! Replay tokens: the model version, the canonical scenario (policy included), the choices and
//! what the replay must show, with a digest over all of it; deflated, then base64url. A token
//! from another model version, an edited one, or one whose replay shows something else is
//! refused. Whitespace and line breaks are ignored, so a token an email client wrapped replays.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::properties::Hit;
use crate::MODEL_VERSION;
use crate::error::{CoreError, CoreResult};
use crate::program::scenario::Scenario;

const PREFIX: &str = "tdxcore2:";
/// A token's payload inflates to at most this many bytes (a scenario is a few kilobytes).
const MAX_PAYLOAD: u64 = 1 << 20;

/// What a replay of the token must show: this property broken, at this step if given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub property: String,
    pub step: Option<u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    model_version: u32,
    scenario: Scenario,
    choices: Vec<u32>,
    expect: Option<Expected>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    #[serde(flatten)]
    body: Body,
    /// The first 16 hex digits of SHA-256 over the body's JSON.
    digest: String,
}

fn digest(body: &Body) -> String {
    let json = serde_json::to_vec(body).expect("a token body serialises");
    Sha256::digest(json).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn encode(scenario: &Scenario, choices: &[u32], expect: Option<Expected>) -> String {
    let body = Body { model_version: MODEL_VERSION, scenario: scenario.clone(), choices: choices.to_vec(), expect };
    pack(&Token { digest: digest(&body), body })
}

fn pack(token: &Token) -> String {
    let json = serde_json::to_vec(token).expect("a token serialises");
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&json).and_then(|()| z.finish()).map_or_else(
        |e| panic!("deflating into memory cannot fail: {e}"),
        |bytes| format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)),
    )
}

/// The scenario, the choices and what the replay must show.
pub fn decode(token: &str) -> CoreResult<(Scenario, Vec<u32>, Option<Expected>)> {
    let bad = |why: String| CoreError::Config(format!("not a tdxcore replay token: {why}"));
    let text: String = token.chars().filter(|c| !c.is_whitespace()).collect();
    if text.starts_with("tdxcore1:") {
        return Err(CoreError::Config(
            "a token of the old format (tdxcore1:, before tokens had a digest): re-run the check to get a new one"
                .into(),
        ));
    }
    let body = text.strip_prefix(PREFIX).ok_or_else(|| {
        bad(format!("it must start with {PREFIX:?} (none found in what was given: paste the whole replay command)"))
    })?;
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| bad(format!("bad base64url ({e}): was it cut short, or a character changed?")))?;
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(&bytes[..])
        .take(MAX_PAYLOAD)
        .read_to_end(&mut json)
        .map_err(|e| bad(format!("it does not inflate ({e}): was it cut short?")))?;
    let t: Token =
        serde_json::from_slice(&json).map_err(|_| bad("its content is damaged: was it edited or cut short?".into()))?;
    if digest(&t.body) != t.digest {
        return Err(bad("its digest does not match its content: it was edited or damaged".into()));
    }
    if t.body.model_version != MODEL_VERSION {
        return Err(CoreError::Config(format!(
            "this replay token was made by model version {}, and this is model version {MODEL_VERSION}: its choices would not mean the same steps; re-run the check to get a new token",
            t.body.model_version
        )));
    }
    Ok((t.body.scenario, t.body.choices, t.body.expect))
}

/// Refuse a replay that does not show what its token expected.
pub fn verify(expect: &Expected, hits: &[Hit]) -> CoreResult<()> {
    let found: Vec<(&str, u32)> = hits.iter().map(|h| (h.property.name(), h.step)).collect();
    let shows = found.iter().any(|&(p, s)| p == expect.property && expect.step.is_none_or(|e| e == s));
    if shows {
        return Ok(());
    }
    let want = match expect.step {
        Some(s) => format!("{} at step {s}", expect.property),
        None => expect.property.clone(),
    };
    let got: Vec<String> = found.iter().map(|(p, s)| format!("{p} at step {s}")).collect();
    Err(CoreError::Config(format!(
        "the replay does not show what its token recorded ({want}; it shows {}): the token's choices no longer lead there",
        if got.is_empty() { "nothing".into() } else { got.join(", ") }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Scenario {
        crate::explore::search::tests::seed_scenario(&crate::model::honor_policy::HonorStep::FINAL, 0)
    }

    #[test]
    fn round_trip_wrapped_and_short() {
        let s = seed();
        let expect = Some(Expected { property: "window".into(), step: Some(33) });
        let t = encode(&s, &[0, 1, 2], expect.clone());
        assert_eq!(decode(&t).unwrap(), (s.clone(), vec![0, 1, 2], expect));
        // As an email client wraps it, with indentation.
        let wrapped: String =
            t.as_bytes().chunks(76).map(|c| format!("    {}\n", String::from_utf8_lossy(c))).collect();
        assert_eq!(decode(&wrapped).unwrap().1, vec![0, 1, 2]);
        let json_len = serde_json::to_string(&s).unwrap().len();
        assert!(t.len() < json_len, "deflated: {} chars for a {json_len}-char scenario", t.len());
    }

    #[test]
    fn edited_damaged_old_and_foreign_tokens_are_refused() {
        let s = seed();
        let t = encode(&s, &[0, 1, 2], None);
        let err = |text: &str| decode(text).unwrap_err().to_string();
        // Another model version's genuine token (its digest matches its content).
        let body = |version, choices: &[u32]| Body {
            model_version: version,
            scenario: s.clone(),
            choices: choices.to_vec(),
            expect: None,
        };
        let foreign =
            pack(&Token { digest: digest(&body(MODEL_VERSION + 1, &[0])), body: body(MODEL_VERSION + 1, &[0]) });
        assert!(err(&foreign).contains("model version"), "{}", err(&foreign));
        // Edited content: the digest no longer matches.
        let edited =
            pack(&Token { digest: digest(&body(MODEL_VERSION, &[0, 1, 2])), body: body(MODEL_VERSION, &[0, 1, 3]) });
        assert!(err(&edited).contains("digest does not match"), "{}", err(&edited));
        // Cut short (an email client ate the end): bad base64 or a deflate stream cut short.
        assert!(err(&t[..t.len() / 2]).contains("not a tdxcore replay token"), "{}", err(&t[..t.len() / 2]));
        assert!(err("tdxcore1:eyJ9").contains("old format"));
        assert!(err("garbage").contains("must start with"));
        assert!(err("tdxcore2:@@@").contains("base64url"));
    }

    #[test]
    fn genuine_tokens_of_bad_content_are_refused() {
        use crate::explore::search::replay;
        let s = seed();
        let signed = |scenario: Scenario, choices: &[u32]| {
            let body = Body { model_version: MODEL_VERSION, scenario, choices: choices.to_vec(), expect: None };
            pack(&Token { digest: digest(&body), body })
        };
        // Deflated bytes that are not a token's JSON.
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(b"{\"digest\": 1").unwrap();
        let not_json = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(z.finish().unwrap()));
        assert!(decode(&not_json).unwrap_err().to_string().contains("content is damaged"));
        // A scenario edited and signed again still meets the validator on replay.
        let mut tampered = s.clone();
        tampered.max_steps = 0;
        let (scn, choices, _) = decode(&signed(tampered, &[])).unwrap();
        let refusal =
            |scn: &Scenario, choices: &[u32]| replay(scn, choices).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refusal(&scn, &choices).contains("max_steps: must be at least 1"));
        // The seed's run with every choice 0 (as many as it makes), then one out of range and one
        // surplus. (Fewer choices are a prefix: a counterexample's token stops at its last
        // non-default choice, later decisions take option 0, and the digest fixes the prefix.)
        let real: Vec<u32> = (1..10_000)
            .map(|n| vec![0; n])
            .find(|c| refusal(&s, c).contains("made only"))
            .map(|c| c[..c.len() - 1].to_vec())
            .expect("the seed's run ends");
        let mut out_of_range = real.clone();
        out_of_range[0] = 1000;
        let mut surplus = real.clone();
        surplus.push(0);
        for (choices, why) in [(out_of_range, "that decision has 2 options"), (surplus, "made only")] {
            let (scn, choices, _) = decode(&signed(s.clone(), &choices)).unwrap();
            let e = refusal(&scn, &choices);
            assert!(e.contains("does not fit its scenario") && e.contains(why), "{e}");
        }
    }
}
