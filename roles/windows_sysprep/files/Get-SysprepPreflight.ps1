# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
<#
.SYNOPSIS
Gathers the Sysprep pre-flight facts of this Windows host and prints them as one JSON object.

.DESCRIPTION
Read-only; one run answers every question the pre-flight asks. The decisions are not made here:
the imageprep.vm.sysprep_preflight filter makes them on the controller. Windows PowerShell 5.1.
A host without a component answers as the component's absence does: no ServerManager module
(client editions) gives no features, no BitLocker module gives no volumes, no Appx module gives no
packages. Any other failure stops the script, so a broken probe is never read as a clean host.
#>

$ErrorActionPreference = 'Stop'

function Test-Command {
    param([string]$Name)
    [bool](Get-Command -Name $Name -ErrorAction SilentlyContinue)
}

function Get-RegistryValue {
    param([string]$Path, [string]$Name)
    $item = Get-ItemProperty -LiteralPath $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    # a multi-string is written item by item: callers that want an array wrap the call in @()
    $item.$Name
}

function Get-ServiceState {
    param([string]$Name)
    $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
    if ($service) { [string]$service.Status } else { 'absent' }
}

$windows = $env:SystemRoot
$currentVersion = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
$os = Get-CimInstance -ClassName Win32_OperatingSystem

# Windows Setup States: the registry value and State.ini's [State] ImageState.
$stateIni = $null
$stateIniPath = Join-Path $windows 'Setup\State\State.ini'
if (Test-Path -LiteralPath $stateIniPath) {
    foreach ($line in Get-Content -LiteralPath $stateIniPath) {
        if ($line -match '^\s*ImageState\s*=\s*(\S+)') { $stateIni = $Matches[1] }
    }
}

$renames = @(Get-RegistryValue 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' 'PendingFileRenameOperations' |
    Where-Object { $_ } | ForEach-Object { [string]$_ })

$bitlocker = @()
if (Test-Command 'Get-BitLockerVolume') {
    $bitlocker = @(Get-BitLockerVolume | ForEach-Object {
        [ordered]@{
            mount_point = [string]$_.MountPoint
            volume_status = [string]$_.VolumeStatus
            protection_status = [string]$_.ProtectionStatus
            encryption_percentage = [double]$_.EncryptionPercentage
        }
    })
}

# Get-WindowsFeature refuses client editions (ProductType 1) even where RSAT installs the module.
$features = @()
if ($os.ProductType -ne 1 -and (Test-Command 'Get-WindowsFeature')) {
    $features = @(Get-WindowsFeature | Where-Object { $_.Installed } | ForEach-Object { [string]$_.Name })
}

# Initializing a WDS server (wdsutil /initialize-server) sets the TFTP root to its RemoteInstall folder.
$wdsInitialized = $null
if (@($features | Where-Object { $_ -in @('WDS', 'WDS-Deployment', 'WDS-Transport') }).Count -gt 0) {
    $root = Get-RegistryValue 'HKLM:\SYSTEM\CurrentControlSet\Services\WDSServer\Providers\WDSTFTP' 'RootFolder'
    $wdsInitialized = [bool]($root -and (Test-Path -LiteralPath ([Environment]::ExpandEnvironmentVariables($root))))
}

# Packages installed for a user whose exact version is not provisioned (KB 2769827). System,
# framework, resource and non-removable packages are Windows' own and never provisioned.
$appx = @()
if ((Test-Command 'Get-AppxPackage') -and (Test-Command 'Get-AppxProvisionedPackage')) {
    $provisioned = @{}
    foreach ($package in Get-AppxProvisionedPackage -Online) { $provisioned[[string]$package.PackageName] = $true }
    $appx = @(Get-AppxPackage -AllUsers | Where-Object {
        -not $_.IsFramework -and -not $_.IsResourcePackage -and -not $_.NonRemovable -and
        [string]$_.SignatureKind -ne 'System' -and -not $provisioned.ContainsKey([string]$_.PackageFullName)
    } | ForEach-Object {
        $users = @($_.PackageUserInformation | Where-Object { [string]$_.InstallState -eq 'Installed' } | ForEach-Object {
            if ($_.UserSecurityId.Username) { [string]$_.UserSecurityId.Username } else { [string]$_.UserSecurityId.Sid }
        })
        if ($users.Count -gt 0) {
            [ordered]@{ name = [string]$_.Name; package_full_name = [string]$_.PackageFullName; users = $users }
        }
    })
}

$cdromStart = Get-RegistryValue 'HKLM:\SYSTEM\CurrentControlSet\Services\cdrom' 'Start'
$computer = Get-CimInstance -ClassName Win32_ComputerSystem
$licensing = Get-CimInstance -ClassName SoftwareLicensingService
$rearm = $null
if ($null -ne $licensing.RemainingWindowsReArmCount) { $rearm = [int]$licensing.RemainingWindowsReArmCount }

$facts = [ordered]@{
    os = [ordered]@{
        caption = [string]$os.Caption
        version = [string]$os.Version
        build = [int]$os.BuildNumber
        product_type = [int]$os.ProductType
        edition = [string](Get-RegistryValue $currentVersion 'EditionID')
        installation_type = [string](Get-RegistryValue $currentVersion 'InstallationType')
    }
    image_state = [ordered]@{
        registry = Get-RegistryValue 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State' 'ImageState'
        state_ini = $stateIni
    }
    pending_reboot = [ordered]@{
        cbs_reboot_pending = Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending'
        wu_reboot_required = Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired'
        pending_file_rename_operations = $renames
        tiworker_running = [bool](Get-Process -Name TiWorker -ErrorAction SilentlyContinue)
    }
    bitlocker = $bitlocker
    features = $features
    wds_initialized = $wdsInitialized
    appx_user_only = $appx
    services = [ordered]@{
        RdAgent = Get-ServiceState 'RdAgent'
        WindowsAzureGuestAgent = Get-ServiceState 'WindowsAzureGuestAgent'
        cdrom_start = if ($null -ne $cdromStart) { [int]$cdromStart } else { $null }
    }
    domain = [ordered]@{
        part_of_domain = [bool]$computer.PartOfDomain
        domain = [string]$computer.Domain
    }
    sysprep = [ordered]@{
        succeeded_tag = Test-Path -LiteralPath (Join-Path $windows 'System32\Sysprep\Sysprep_succeeded.tag')
        running = [bool](Get-Process -Name sysprep -ErrorAction SilentlyContinue)
    }
    rearm_count = $rearm
}

$facts | ConvertTo-Json -Depth 5 -Compress
