//! A node's network interfaces (`GET /nodes/{node}/network`), for the bridges guests attach to.

use serde::Deserialize;

use crate::core::names::NodeName;

use super::client::{seg, PveClient};
use super::error::PveError;
use super::form::Form;

/// One interface of `GET /nodes/{node}/network`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Interface {
    pub iface: String,
    /// `bridge`, `OVSBridge`, `eth`, `bond`, `vlan`, …
    #[serde(rename = "type")]
    pub kind: String,
}

impl PveClient {
    /// `GET /nodes/{node}/network?type=any_bridge`: the node's Linux and OVS bridges.
    pub async fn bridges(&self, node: &NodeName) -> Result<Vec<String>, PveError> {
        let list: Vec<Interface> = self.get(&format!("/nodes/{}/network", seg(node.as_str())), Form::new().set("type", "any_bridge"), "network").await?;
        Ok(list.into_iter().map(|i| i.iface).collect())
    }
}
