//! Replay tokens: the model version, the canonical scenario (policy included) and the choices,
//! as base64url JSON. A token from another model version is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::scenario::Scenario;
use crate::MODEL_VERSION;
use crate::error::{CoreError, CoreResult};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    model_version: u32,
    scenario: Scenario,
    choices: Vec<u32>,
}

pub fn encode(scenario: &Scenario, choices: &[u32]) -> String {
    let t = Token { model_version: MODEL_VERSION, scenario: scenario.clone(), choices: choices.to_vec() };
    let json = serde_json::to_vec(&t).expect("a token serialises");
    format!("tdxcore1:{}", URL_SAFE_NO_PAD.encode(json))
}

pub fn decode(token: &str) -> CoreResult<(Scenario, Vec<u32>)> {
    let bad = |why: String| CoreError::Config(format!("not a tdxcore replay token: {why}"));
    let body = token.trim().strip_prefix("tdxcore1:").ok_or_else(|| bad("it must start with \"tdxcore1:\"".into()))?;
    let json = URL_SAFE_NO_PAD.decode(body).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    let version = v.get("model_version").and_then(|x| x.as_u64());
    if version != Some(MODEL_VERSION as u64) {
        return Err(CoreError::Config(format!(
            "this replay token was made by model version {}, and this is model version {MODEL_VERSION}: its choices would not mean the same steps; re-run the check to get a new token",
            version.map_or("unknown".into(), |v| v.to_string())
        )));
    }
    let t: Token = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
    Ok((t.scenario, t.choices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let s = crate::explore::search::tests::seed_scenario(&crate::model::honor::HonorStep::FINAL, 0);
        let t = encode(&s, &[0, 1, 2]);
        let (s2, c) = decode(&t).unwrap();
        assert_eq!((s2, c), (s.clone(), vec![0, 1, 2]));
        let forged = {
            let json = serde_json::json!({"model_version": MODEL_VERSION + 1, "scenario": s, "choices": [0]});
            format!("tdxcore1:{}", URL_SAFE_NO_PAD.encode(json.to_string()))
        };
        assert!(decode(&forged).unwrap_err().to_string().contains("model version"));
        assert!(decode("garbage").is_err());
    }
}
