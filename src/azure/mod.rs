//! Azure: Entra ID credentials ([`auth`]) and the Resource Manager client
//! ([`arm`]): plain reqwest + serde, no generated SDK.

pub mod arm;
pub mod auth;
pub mod ratelimit;

use crate::feed::Cloud;

/// Resource Manager and Entra ID endpoints of a cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    pub resource_manager: String,
    pub authority_host: String,
    /// The token scope for Resource Manager.
    pub scope: String,
}

impl CloudEndpoints {
    pub fn of(cloud: Cloud) -> Self {
        let (arm, login) = match cloud {
            Cloud::Public => (
                "https://management.azure.com",
                "https://login.microsoftonline.com",
            ),
            Cloud::Usgov => (
                "https://management.usgovcloudapi.net",
                "https://login.microsoftonline.us",
            ),
            Cloud::China => (
                "https://management.chinacloudapi.cn",
                "https://login.chinacloudapi.cn",
            ),
        };
        Self {
            resource_manager: arm.to_owned(),
            authority_host: login.to_owned(),
            scope: format!("{arm}/.default"),
        }
    }
}
