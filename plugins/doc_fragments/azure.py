# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    """Azure credentials and cloud options of the azure_* modules (azure.azcollection's names and sources)."""

    DOCUMENTATION = r"""
options:
  auth_source:
    description:
      - Where the credentials come from.
      - V(auto) takes the module options when a credential option is set, else the C(AZURE_*)
        environment variables when one is set, else the profile O(profile) or C([default]) of
        C(~/.azure/credentials), else the Azure CLI's login when C(az) is installed, else the managed
        identity of the host when it has one (C(IDENTITY_ENDPOINT) or C(MSI_ENDPOINT) set).
      - V(env) reads C(AZURE_CLIENT_ID), C(AZURE_SECRET), C(AZURE_TENANT), C(AZURE_SUBSCRIPTION_ID),
        C(AZURE_AD_USER), C(AZURE_PASSWORD), C(AZURE_CLOUD_ENVIRONMENT) and C(AZURE_CERT_VALIDATION_MODE).
      - V(credential_file) reads the INI file C(~/.azure/credentials) (profile O(profile), default C([default])).
      - V(cli) uses the Azure CLI's login (C(az login)); the subscription is the CLI's current one unless
        O(subscription_id) is set.
      - V(msi) uses the managed identity of the host; O(client_id) selects a user-assigned identity.
    type: str
    default: auto
    choices: [auto, cli, credential_file, env, msi]
  profile:
    description: Profile of C(~/.azure/credentials) to read (also C(AZURE_PROFILE)).
    type: str
  subscription_id:
    description: Subscription to work in, a GUID (also C(AZURE_SUBSCRIPTION_ID) or the credential file).
    type: str
  client_id:
    description: Application (client) ID of a service principal, or of a user-assigned managed identity.
    type: str
  secret:
    description: Client secret of the service principal.
    type: str
  tenant:
    description: Tenant (directory) ID of the service principal.
    type: str
  ad_user:
    description: User name of a Microsoft Entra ID account without multi-factor authentication.
    type: str
  password:
    description: Password of O(ad_user).
    type: str
  cloud_environment:
    description:
      - Azure cloud to talk to, by name (V(AzureCloud), V(AzureChinaCloud), V(AzureUSGovernment)), or the
        https URL of an Azure Resource Manager endpoint whose endpoints are read from its metadata
        (Azure Stack Hub). Default V(AzureCloud).
    type: str
  cert_validation_mode:
    description:
      - V(ignore) skips TLS certificate validation (for Azure Stack with a private CA, prefer
        C(REQUESTS_CA_BUNDLE) naming the CA instead). Default V(validate).
    type: str
    choices: [validate, ignore]
requirements:
  - azure-identity >= 1.16.0
  - azure-core
notes:
  - Requests go to the Azure Resource Manager REST API through azure-core's HTTP pipeline (retries,
    bearer tokens) at pinned versions (C(2024-11-01) for virtual
    machines and images, C(2024-03-03) for galleries, C(2025-01-02) for disks and snapshots).
  - Long-running operations are followed as Azure documents them (C(Azure-AsyncOperation), C(Location),
    C(Retry-After)) up to the module's timeout; when it passes the operation goes on in Azure, and running
    the task again waits for it instead of starting another.
"""
