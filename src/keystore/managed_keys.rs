//! AWS managed keys: the key an integrated service gets in an account the first time the
//! account names `alias/aws/<service>`, for the services this site runs (`[service]
//! managed_key_services`).
//!
//! This module owns the services' wording (each key's description and key policy, as AWS
//! writes them for that service, or AWS's generic form for a service AWS does not have),
//! the creation of a managed key on first use (once per account, alias and region, however
//! many calls race for it), and the predefined aliases that ListAliases shows before first
//! use. It never lets a caller change a managed key: that is the key policy's doing, which
//! allows the account only to read the key's metadata (`Describe*`, `Get*`, `List*`) and to
//! use it through the service (`kms:ViaService`); every other call on the key is refused by
//! the policy evaluator with `AccessDeniedException`, as AWS refuses it.

use std::sync::Mutex;

use super::{Caller, KeyStore, alias_key, encode};
use crate::audit::event::{ServiceCall, service_call_event};
use crate::clock::DAY_MILLIS;
use crate::error::KmsError;
use crate::ids::{KeyId, Scope};
use crate::keys::records::{
    AliasRecord, KeyManager, KeyRecord, MaterialRecord, ParsedPolicy, RotationSchedule,
};
use crate::keys::state::{KeyState, Operation};
use crate::policy::{ManagedKeyAccess, managed_key_policy};
use crate::store::{Precondition, Table};

/// The alias namespace of AWS managed keys.
const MANAGED_ALIAS_PREFIX: &str = "alias/aws/";
/// Days between the automatic rotations of a managed key (AWS: every year, not changeable).
const ROTATION_PERIOD_DAYS: u32 = 365;
/// Use through the service, for most services.
const USE_THROUGH_SERVICE: &[&str] = &[
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:CreateGrant",
    "kms:DescribeKey",
];
/// Direct access of the account to the key's metadata, and revoking the service's grants.
const METADATA_AND_REVOKE: &[&str] = &["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"];

/// How AWS words one service's managed key.
struct Wording {
    service: &'static str,
    description: &'static str,
    access: ManagedKeyAccess<'static>,
}

/// The services whose managed keys AWS words in its own way (from the keys AWS creates:
/// their descriptions and key policies).
const WORDINGS: &[Wording] = &[
    Wording {
        service: "s3",
        description: "Default key that protects my S3 objects when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-s3-2",
            service_title: "S3",
            service_user_title: "S3",
            via_service: "s3",
            actions: &[
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:DescribeKey",
            ],
            direct_actions: &["kms:Describe*", "kms:Get*", "kms:List*"],
        },
    },
    Wording {
        service: "ebs",
        description: "Default key that protects my EBS volumes when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-ebs-2",
            service_title: "EBS",
            service_user_title: "EBS",
            via_service: "ec2",
            actions: USE_THROUGH_SERVICE,
            direct_actions: METADATA_AND_REVOKE,
        },
    },
    Wording {
        service: "rds",
        description: "Default key that protects my RDS database volumes when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-rds-2",
            service_title: "RDS",
            service_user_title: "RDS",
            via_service: "rds",
            actions: &[
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:CreateGrant",
                "kms:ListGrants",
                "kms:DescribeKey",
            ],
            direct_actions: METADATA_AND_REVOKE,
        },
    },
    Wording {
        service: "lambda",
        description: "Default key that protects my Lambda functions when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-awslambda",
            service_title: "AWS Lambda",
            service_user_title: "AWS Lambda",
            via_service: "lambda",
            actions: USE_THROUGH_SERVICE,
            direct_actions: METADATA_AND_REVOKE,
        },
    },
    Wording {
        service: "secretsmanager",
        description: "Default key that protects my Secrets Manager data when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-secretsmanager-1",
            service_title: "AWS Secrets Manager",
            service_user_title: "AWS Secrets Manager",
            via_service: "secretsmanager",
            actions: USE_THROUGH_SERVICE,
            direct_actions: METADATA_AND_REVOKE,
        },
    },
    Wording {
        service: "sns",
        description: "Default key that protects my SNS data when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-sns-1",
            service_title: "SNS",
            service_user_title: "SNS",
            via_service: "sns",
            actions: &[
                "kms:Decrypt",
                "kms:GenerateDataKey*",
                "kms:CreateGrant",
                "kms:ListGrants",
                "kms:DescribeKey",
            ],
            direct_actions: METADATA_AND_REVOKE,
        },
    },
    Wording {
        service: "sqs",
        description: "Default key that protects my SQS messages when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-sqs-1",
            service_title: "Simple Queue Service (SQS)",
            service_user_title: "SQS",
            via_service: "sqs",
            actions: USE_THROUGH_SERVICE,
            direct_actions: METADATA_AND_REVOKE,
        },
    },
    Wording {
        service: "dynamodb",
        description: "Default key that protects my DynamoDB data when no other key is defined",
        access: ManagedKeyAccess {
            policy_id: "auto-dynamodb-1",
            service_title: "Amazon DynamoDB",
            service_user_title: "Amazon DynamoDB",
            via_service: "dynamodb",
            actions: USE_THROUGH_SERVICE,
            direct_actions: METADATA_AND_REVOKE,
        },
    },
];

/// The managed-key services a key store serves, and the lock that makes each managed key
/// once per process (across processes sharing a store, the alias's `ExpectAbsent`
/// precondition does).
#[derive(Default)]
pub(super) struct ManagedKeys {
    services: Vec<String>,
    creating: Mutex<()>,
}

impl ManagedKeys {
    /// Serves the managed keys of `services`.
    pub(super) fn new(services: &[String]) -> ManagedKeys {
        ManagedKeys {
            services: services.to_vec(),
            creating: Mutex::new(()),
        }
    }

    /// The service of a managed-key alias name this store serves (`s3` for
    /// `alias/aws/s3`), if it is one.
    fn service_of<'a>(&'a self, alias_name: &str) -> Option<&'a str> {
        let service = alias_name.strip_prefix(MANAGED_ALIAS_PREFIX)?;
        self.services
            .iter()
            .find(|served| served.as_str() == service)
            .map(String::as_str)
    }

    /// The alias names of the served services, in name order.
    pub(super) fn predefined_aliases(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .services
            .iter()
            .map(|service| format!("{MANAGED_ALIAS_PREFIX}{service}"))
            .collect();
        names.sort();
        names
    }
}

/// Whether naming a managed key's alias as `param` of `operation` creates the key on first
/// use, as AWS's integrated services do: DescribeKey, Encrypt, the GenerateDataKey family
/// and the destination of ReEncrypt. Other operations (Decrypt, which needs a ciphertext of
/// the key, the management operations, ...) find no such key before then.
fn creates_on_first_use(operation: Operation, param: &str) -> bool {
    use Operation::*;
    match operation {
        DescribeKey
        | Encrypt
        | GenerateDataKey
        | GenerateDataKeyWithoutPlaintext
        | GenerateDataKeyPair
        | GenerateDataKeyPairWithoutPlaintext => true,
        ReEncrypt => param == "destinationKeyId",
        _ => false,
    }
}

/// The key policy and description of `service`'s managed key in `scope`.
fn wording(service: &str, scope: &Scope) -> (String, String) {
    let (account, region) = (scope.account_id(), scope.region());
    match WORDINGS.iter().find(|wording| wording.service == service) {
        Some(wording) => (
            managed_key_policy(&wording.access, account, region),
            wording.description.to_owned(),
        ),
        None => {
            let policy_id = format!("auto-{service}");
            let access = ManagedKeyAccess {
                policy_id: &policy_id,
                service_title: service,
                service_user_title: service,
                via_service: service,
                actions: USE_THROUGH_SERVICE,
                direct_actions: METADATA_AND_REVOKE,
            };
            (
                managed_key_policy(&access, account, region),
                format!("Default key that protects my {service} data when no other key is defined"),
            )
        }
    }
}

/// The principal a service acts as (`invokedBy`): its endpoint's first label, so EBS acts
/// as `ec2.amazonaws.com`.
fn service_principal(service: &str) -> String {
    let via = WORDINGS
        .iter()
        .find(|wording| wording.service == service)
        .map_or(service, |wording| wording.access.via_service);
    format!("{via}.amazonaws.com")
}

impl KeyStore {
    /// The key an alias name in the caller's scope points at; for a managed-key alias of a
    /// served service that points at nothing yet, and a call that creates on first use,
    /// the managed key created now.
    pub(super) fn alias_target_or_managed(
        &self,
        caller: &Caller,
        operation: Operation,
        param: &str,
        name: &str,
    ) -> Result<Option<KeyId>, KmsError> {
        if let Some(target) = self.alias_target(&caller.scope, name)? {
            return Ok(Some(target));
        }
        let Some(service) = self.managed.service_of(name) else {
            return Ok(None);
        };
        if !creates_on_first_use(operation, param) {
            return Ok(None);
        }
        let _one_at_a_time = self
            .managed
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(target) = self.alias_target(&caller.scope, name)? {
            return Ok(Some(target));
        }
        match self.create_managed_key(&caller.scope, service, name) {
            Ok(key_id) => Ok(Some(key_id)),
            // Another instance sharing the store made it first: use theirs.
            Err(KmsError::Conflict(reason)) => match self.alias_target(&caller.scope, name)? {
                Some(theirs) => Ok(Some(theirs)),
                None => Err(KmsError::Conflict(reason)),
            },
            Err(error) => Err(error),
        }
    }

    /// Creates `service`'s managed key in `scope` and points `alias_name` at it, in one
    /// batch that requires both to be absent; records the creation in the audit trail as
    /// the service's own call.
    ///
    /// The material is generated and replicated between an intent and that batch, as for
    /// CreateKey ([`KeyStore::create_material`]); when the batch loses a race the material
    /// is destroyed again and `Conflict` returned.
    fn create_managed_key(
        &self,
        scope: &Scope,
        service: &str,
        alias_name: &str,
    ) -> Result<KeyId, KmsError> {
        self.trail_probe()?;
        let key_id = KeyId::new_random();
        let now = self.now();
        let (policy, description) = wording(service, scope);
        let record = KeyRecord {
            key_id: key_id.to_string(),
            account_id: scope.account_id().to_owned(),
            region: scope.region().to_owned(),
            cluster: self.region_cluster_name(scope.region()),
            custom_key_store_id: None,
            creation_date: now,
            description,
            key_usage: "ENCRYPT_DECRYPT".to_owned(),
            key_spec: super::api::SYMMETRIC_DEFAULT.to_owned(),
            origin: "AWS_KMS".to_owned(),
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            tags: Default::default(),
            materials: vec![MaterialRecord {
                version: 1,
                created: now,
                rotation_type: None,
                pool_object: None,
            }],
            rotation: Some(RotationSchedule {
                period_days: ROTATION_PERIOD_DAYS,
                next_rotation: now + i64::from(ROTATION_PERIOD_DAYS) * DAY_MILLIS,
            }),
            destruction_pending: Vec::new(),
            destruction_started: false,
            policy: Some(policy),
            public_key: None,
            parsed_policy: ParsedPolicy::default(),
            import: None,
            key_manager: KeyManager::Aws,
            multi_region: None,
        };
        let alias = AliasRecord {
            name: alias_name.to_owned(),
            target_key_id: record.key_id.clone(),
            creation_date: now,
            last_updated_date: now,
        };
        let alias_store_key = alias_key(scope, alias_name);
        self.create_material(&record, 1, |batch| {
            batch
                .put_if(
                    Table::Keys,
                    record.store_key().as_bytes(),
                    Precondition::ExpectAbsent,
                    encode(&record)?,
                )
                .put_if(
                    Table::Aliases,
                    &alias_store_key,
                    Precondition::ExpectAbsent,
                    encode(&alias)?,
                );
            super::aliases::index_alias(batch, scope, &alias);
            Ok(())
        })?;
        let event = service_call_event(
            ServiceCall {
                account: scope.account_id(),
                region: scope.region(),
                time_millis: now,
                event_name: Operation::CreateKey.as_str(),
                invoked_by: &service_principal(service),
                resources: &[record.arn()],
            },
            serde_json::json!({
                "description": record.description,
                "keyUsage": record.key_usage,
                "keySpec": record.key_spec,
                "origin": record.origin,
                "bypassPolicyLockoutSafetyCheck": false,
            }),
            serde_json::json!({ "keyMetadata": super::lifecycle::metadata(&record) }),
        );
        if let Err(error) = self.audit.append(&event, true) {
            tracing::error!(%error, "audit event of a managed key's creation lost");
        }
        tracing::info!(key = %record.arn(), alias = alias_name, "AWS managed key created on first use");
        Ok(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wording_parses_as_a_key_policy_and_names_its_service_endpoint() {
        let scope = Scope::new("eu-west-1", "111122223333").unwrap();
        for service in WORDINGS
            .iter()
            .map(|wording| wording.service)
            .chain(["object-gateway"])
        {
            let (policy, description) = wording(service, &scope);
            crate::policy::parse_key_policy(&policy).unwrap();
            assert!(description.starts_with("Default key that protects my "));
            let value: serde_json::Value = serde_json::from_str(&policy).unwrap();
            let condition = &value["Statement"][0]["Condition"]["StringEquals"];
            assert_eq!(condition["kms:CallerAccount"], "111122223333");
            let via = condition["kms:ViaService"].as_str().unwrap();
            assert_eq!(
                via,
                service_principal(service).replace(".amazonaws.com", ".eu-west-1.amazonaws.com")
            );
        }
    }

    #[test]
    fn only_the_documented_calls_create_on_first_use() {
        for operation in Operation::ALL {
            let creates = creates_on_first_use(operation, "keyId");
            let expected = matches!(
                operation,
                Operation::DescribeKey
                    | Operation::Encrypt
                    | Operation::GenerateDataKey
                    | Operation::GenerateDataKeyWithoutPlaintext
                    | Operation::GenerateDataKeyPair
                    | Operation::GenerateDataKeyPairWithoutPlaintext
            );
            assert_eq!(creates, expected, "{}", operation.as_str());
        }
        assert!(creates_on_first_use(
            Operation::ReEncrypt,
            "destinationKeyId"
        ));
        assert!(!creates_on_first_use(Operation::ReEncrypt, "sourceKeyId"));
    }

    #[test]
    fn only_served_services_have_managed_aliases() {
        let managed = ManagedKeys::new(&["s3".to_owned(), "ebs".to_owned()]);
        assert_eq!(managed.service_of("alias/aws/s3"), Some("s3"));
        assert_eq!(managed.service_of("alias/aws/rds"), None);
        assert_eq!(managed.service_of("alias/aws/s3/x"), None);
        assert_eq!(managed.service_of("alias/s3"), None);
        assert_eq!(
            managed.predefined_aliases(),
            ["alias/aws/ebs", "alias/aws/s3"]
        );
    }
}
