//! The attributes and blocks of the two resources the export writes, as the provider's schema literals declare
//! them at v0.111.1 (paths relative to `proxmoxtf/resource/`): type, Default, Computed, ForceNew and the
//! DiffSuppress/StateFunc that changes how a value is compared. Only what the export writes or what Read sets
//! from a PVE key the model understands; `bpg-source-facts.json` has the rest.

use crate::core::deployment::GuestType;

/// The value's type, as the SDK compares it (`helper/schema/schema.go` `diffString`, `diffList`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Float,
    Bool,
    /// A list of strings.
    List,
    /// A nested block (`TypeList` of `schema.Resource`).
    Block,
}

/// How a configured value is compared with the state, where the schema has more than equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Exact,
    /// `SuppressIfListsAreEqualIgnoringOrder` (tags).
    Unordered,
    /// Blocks paired by this attribute, in any order (`SuppressIfListsOfMapsAreEqualIgnoringOrderByKey`, VM disks).
    ByKey(&'static str),
    /// VM `description`'s StateFunc: TrimSpace, CRLF → LF (`vm/vm.go:748-757`).
    TrimSpace,
    /// Container `description`'s StateFunc: the same plus a final newline (`container/container.go:374-382`).
    TrimNewline,
    /// Suppressed when the configured value is empty (`vm/vm.go:1944-1954`; container MAC, `container.go:949-958`).
    SuppressEmptyConfig,
    /// Container `initialization.dns`: adding an all-empty block is suppressed (`container.go:4295-4307`).
    SuppressEmptyBlock,
    /// `mount_point.volume`: equal, or the state's volume lies on the configured storage (`container.go:813-828`).
    Volume,
    /// `mount_point.path`: equal, or `"/" + state == config` (`container.go:773-780`).
    LeadingSlash,
}

/// When a change forces replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    Never,
    /// `ForceNew: true`.
    Always,
    /// Container `disk`'s CustomizeDiff: only when a size shrinks (`container.go:1183-1228`).
    WhenShrinks,
    /// `forceNewOnEFIDiskTypeChange` / `forceNewOnTPMVersionChange`: between two non-empty values (`vm.go:1814-1928`).
    BetweenNonEmpty,
}

/// One attribute or block: its flat path without indexes (`initialization.ip_config.ipv4.address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub path: &'static str,
    pub ty: Ty,
    /// The schema's `Default`, as text (`"true"`, `"1800"`); none for blocks (a list's DefaultFunc never reaches
    /// the configuration: SDK `helper/schema/field_reader.go:118-124,176-199`).
    pub default: Option<&'static str>,
    pub computed: bool,
    pub replace: Replace,
    pub compare: Compare,
    /// Where the schema literal is, relative to `proxmoxtf/resource/`.
    pub source: &'static str,
}

const fn a(path: &'static str, ty: Ty, default: Option<&'static str>, source: &'static str) -> Attr {
    Attr { path, ty, default, computed: false, replace: Replace::Never, compare: Compare::Exact, source }
}

impl Attr {
    const fn computed(mut self) -> Self {
        self.computed = true;
        self
    }
    const fn force_new(mut self) -> Self {
        self.replace = Replace::Always;
        self
    }
    const fn replace(mut self, r: Replace) -> Self {
        self.replace = r;
        self
    }
    const fn compare(mut self, c: Compare) -> Self {
        self.compare = c;
        self
    }
}

pub fn resource_type(kind: GuestType) -> &'static str {
    match kind {
        GuestType::Vm => crate::export::hcl::VM_RESOURCE,
        GuestType::Lxc => crate::export::hcl::CONTAINER_RESOURCE,
    }
}

pub fn table(kind: GuestType) -> &'static [Attr] {
    match kind {
        GuestType::Vm => VM,
        GuestType::Lxc => CONTAINER,
    }
}

/// `proxmox_virtual_environment_vm` (`vm/vm.go` `VM()`, lines 342-1812). Left out on purpose: `migrate`,
/// `timeout_*`, `*_on_destroy`, `reboot*` (Read back-fills their defaults, `vm.go:5631-5644`), `pool_id`
/// (suppressed when not configured, `vm.go:5336-5350`), `clone.*` beyond `vm_id`/`full`.
pub const VM: &[Attr] = &[
    a("name", Ty::Str, Some(""), "vm/vm.go:1236-1242"),
    a("node_name", Ty::Str, None, "vm/vm.go:1243-1248"),
    a("vm_id", Ty::Int, None, "vm/vm.go:1664-1672").computed(),
    a("description", Ty::Str, Some(""), "vm/vm.go:743-758").compare(Compare::TrimSpace),
    a("tags", Ty::List, None, "vm/vm.go:1515-1525").compare(Compare::Unordered),
    a("on_boot", Ty::Bool, Some("true"), "vm/vm.go:359-364"),
    a("started", Ty::Bool, Some("true"), "vm/vm.go:1471-1479"),
    a("scsi_hardware", Ty::Str, Some("virtio-scsi-pci"), "vm/vm.go:1673-1679"),
    a("boot_order", Ty::List, None, "vm/vm.go:365-371").computed(),
    a("bios", Ty::Str, Some("seabios"), "vm/vm.go:541-547"),
    a("machine", Ty::Str, Some(""), "vm/vm.go:1161-1167"),
    a("keyboard_layout", Ty::Str, Some("en-us"), "vm/vm.go:1154-1160"),
    a("acpi", Ty::Bool, Some("true"), "vm/vm.go:372-377"),
    a("tablet_device", Ty::Bool, Some("true"), "vm/vm.go:1509-1514"),
    a("protection", Ty::Bool, Some("false"), "vm/vm.go:1351-1356"),
    a("kvm_arguments", Ty::Str, Some(""), "vm/vm.go:501-506"),
    a("hook_script_file_id", Ty::Str, Some(""), "vm/vm.go:1680-1685"),
    a("hotplug", Ty::Str, None, "vm/vm.go:1132-1153").computed(),
    a("template", Ty::Bool, Some("false"), "vm/vm.go:1526-1532"),
    a("clone", Ty::Block, None, "vm/vm.go:592-640"),
    a("clone.vm_id", Ty::Int, None, "vm/vm.go:622-628").force_new(),
    a("clone.full", Ty::Bool, Some("true"), "vm/vm.go:629-635").force_new(),
    a("agent", Ty::Block, None, "vm/vm.go:378-453"),
    a("agent.enabled", Ty::Bool, Some("false"), "vm/vm.go:394-399"),
    a("agent.trim", Ty::Bool, Some("false"), "vm/vm.go:407-412"),
    a("agent.type", Ty::Str, Some("virtio"), "vm/vm.go:413-419"),
    a("cpu", Ty::Block, None, "vm/vm.go:641-742"),
    a("cpu.cores", Ty::Int, Some("1"), "vm/vm.go:670-676"),
    a("cpu.sockets", Ty::Int, Some("1"), "vm/vm.go:708-714"),
    a("cpu.type", Ty::Str, Some("qemu64"), "vm/vm.go:715-721"),
    a("cpu.flags", Ty::List, None, "vm/vm.go:677-685"),
    a("cpu.units", Ty::Int, None, "vm/vm.go:722-730").computed(),
    a("cpu.architecture", Ty::Str, Some(""), "vm/vm.go:663-669"),
    a("cpu.hotplugged", Ty::Int, Some("0"), "vm/vm.go:686-692"),
    a("cpu.limit", Ty::Float, Some("0"), "vm/vm.go:693-701"),
    a("cpu.numa", Ty::Bool, Some("false"), "vm/vm.go:702-707"),
    a("cpu.affinity", Ty::Str, Some(""), "vm/vm.go:731-737"),
    a("memory", Ty::Block, None, "vm/vm.go:1168-1235"),
    a("memory.dedicated", Ty::Int, Some("512"), "vm/vm.go:1185-1193"),
    a("memory.floating", Ty::Int, Some("0"), "vm/vm.go:1194-1202"),
    a("disk", Ty::Block, None, "vm/disk/schema.go:61-299").compare(Compare::ByKey("interface")),
    a("disk.interface", Ty::Str, None, "vm/disk/schema.go:92-96"),
    a("disk.datastore_id", Ty::Str, Some("local-lvm"), "vm/disk/schema.go:97-102"),
    a("disk.size", Ty::Int, None, "vm/disk/schema.go:160-169").computed(),
    a("disk.iothread", Ty::Bool, Some("false"), "vm/disk/schema.go:170-175"),
    a("disk.discard", Ty::Str, Some("ignore"), "vm/disk/schema.go:201-206"),
    a("disk.ssd", Ty::Bool, Some("false"), "vm/disk/schema.go:195-200"),
    a("disk.aio", Ty::Str, Some("io_uring"), "vm/disk/schema.go:117-129"),
    a("disk.backup", Ty::Bool, Some("true"), "vm/disk/schema.go:130-135"),
    a("disk.cache", Ty::Str, Some("none"), "vm/disk/schema.go:207-221"),
    a("disk.replicate", Ty::Bool, Some("true"), "vm/disk/schema.go:189-194"),
    a("disk.serial", Ty::Str, Some(""), "vm/disk/schema.go:153-159"),
    a("disk.queues", Ty::Int, Some("0"), "vm/disk/schema.go:176-188"),
    a("network_device", Ty::Block, None, "vm/network/schema.go:75-162").computed(),
    a("network_device.bridge", Ty::Str, Some("vmbr0"), "vm/network/schema.go:83-88"),
    a("network_device.model", Ty::Str, Some("virtio"), "vm/network/schema.go:115-127"),
    a("network_device.mac_address", Ty::Str, None, "vm/network/schema.go:108-114").computed(),
    a("network_device.firewall", Ty::Bool, Some("false"), "vm/network/schema.go:102-107"),
    a("network_device.vlan_id", Ty::Int, Some("0"), "vm/network/schema.go:141-146"),
    a("network_device.enabled", Ty::Bool, Some("true"), "vm/network/schema.go:94-101"),
    a("network_device.disconnected", Ty::Bool, None, "vm/network/schema.go:89-93"),
    a("network_device.queues", Ty::Int, Some("0"), "vm/network/schema.go:128-134"),
    a("network_device.rate_limit", Ty::Float, Some("0"), "vm/network/schema.go:135-140"),
    a("network_device.mtu", Ty::Int, Some("0"), "vm/network/schema.go:152-157"),
    a("network_device.trunks", Ty::Str, None, "vm/network/schema.go:147-151"),
    a("initialization", Ty::Block, None, "vm/vm.go:833-1046"),
    a("initialization.interface", Ty::Str, Some(""), "vm/vm.go:848-857").compare(Compare::SuppressEmptyConfig),
    a("initialization.datastore_id", Ty::Str, Some("local-lvm"), "vm/vm.go:842-847"),
    a("initialization.dns", Ty::Block, None, "vm/vm.go:865-891"),
    a("initialization.dns.domain", Ty::Str, Some(""), "vm/vm.go:874-879"),
    a("initialization.dns.servers", Ty::List, None, "vm/vm.go:880-886"),
    a("initialization.ip_config", Ty::Block, None, "vm/vm.go:892-957"),
    a("initialization.ip_config.ipv4", Ty::Block, None, "vm/vm.go:901"),
    a("initialization.ip_config.ipv4.address", Ty::Str, Some(""), "vm/vm.go:910-915"),
    a("initialization.ip_config.ipv4.gateway", Ty::Str, Some(""), "vm/vm.go:916-921"),
    a("initialization.ip_config.ipv6", Ty::Block, None, "vm/vm.go:927"),
    a("initialization.ip_config.ipv6.address", Ty::Str, Some(""), "vm/vm.go:936-941"),
    a("initialization.ip_config.ipv6.gateway", Ty::Str, Some(""), "vm/vm.go:942-947"),
    a("initialization.user_account", Ty::Block, None, "vm/vm.go:958-993"),
    a("initialization.user_account.username", Ty::Str, None, "vm/vm.go:984-988"),
    a("initialization.user_account.keys", Ty::List, None, "vm/vm.go:967-972"),
    a("initialization.user_data_file_id", Ty::Str, None, "vm/vm.go:994-1001").computed().force_new(),
    a("initialization.vendor_data_file_id", Ty::Str, None, "vm/vm.go:1002-1009").computed().force_new(),
    a("initialization.network_data_file_id", Ty::Str, None, "vm/vm.go:1010-1017").computed().force_new(),
    a("initialization.meta_data_file_id", Ty::Str, None, "vm/vm.go:1018-1025").computed().force_new(),
    a("initialization.type", Ty::Str, None, "vm/vm.go:1026-1033").computed().force_new(),
    a("initialization.upgrade", Ty::Bool, None, "vm/vm.go:1034-1041").computed(),
    a("operating_system", Ty::Block, None, "vm/vm.go:1317-1341"),
    a("operating_system.type", Ty::Str, Some("other"), "vm/vm.go:1330-1336"),
    a("serial_device", Ty::Block, None, "vm/vm.go:1393-1417"),
    a("serial_device.device", Ty::Str, Some("socket"), "vm/vm.go:1406-1412"),
    a("vga", Ty::Block, None, "vm/vm.go:1583-1618").computed(),
    a("vga.type", Ty::Str, Some("std"), "vm/vm.go:1607-1613"),
    a("vga.memory", Ty::Int, Some("16"), "vm/vm.go:1600-1606"),
    a("vga.clipboard", Ty::Str, Some(""), "vm/vm.go:1590-1599"),
    a("efi_disk", Ty::Block, None, "vm/vm.go:759-802"),
    a("efi_disk.datastore_id", Ty::Str, Some("local-lvm"), "vm/vm.go:768-773"),
    a("efi_disk.type", Ty::Str, Some("2m"), "vm/vm.go:781-790").replace(Replace::BetweenNonEmpty),
    a("efi_disk.pre_enrolled_keys", Ty::Bool, Some("false"), "vm/vm.go:791-797"),
    a("tpm_state", Ty::Block, None, "vm/vm.go:803-832"),
    a("tpm_state.datastore_id", Ty::Str, Some("local-lvm"), "vm/vm.go:812-817"),
    a("tpm_state.version", Ty::Str, Some("v2.0"), "vm/vm.go:818-827").replace(Replace::BetweenNonEmpty),
    a("startup", Ty::Block, None, "vm/vm.go:1480-1508"),
    a("startup.order", Ty::Int, Some("-1"), "vm/vm.go:1486-1491"),
    a("startup.up_delay", Ty::Int, Some("-1"), "vm/vm.go:1492-1497"),
    a("startup.down_delay", Ty::Int, Some("-1"), "vm/vm.go:1498-1503"),
];

/// `proxmox_virtual_environment_container` (`container/container.go` `Container()`). Left out on purpose:
/// `pool_id` (ForceNew, never read), `template`, `environment_variables`, `idmap`, `device_passthrough`.
pub const CONTAINER: &[Attr] = &[
    a("node_name", Ty::Str, None, "container/container.go:987-992").force_new(),
    a("vm_id", Ty::Int, None, "container/container.go:1159-1165").computed(),
    a("description", Ty::Str, Some(""), "container/container.go:369-383").compare(Compare::TrimNewline),
    a("tags", Ty::List, None, "container/container.go:1079-1089").compare(Compare::Unordered),
    a("start_on_boot", Ty::Bool, Some("true"), "container/container.go:1072-1078"),
    a("started", Ty::Bool, Some("true"), "container/container.go:1034-1042"),
    a("unprivileged", Ty::Bool, Some("false"), "container/container.go:1152-1158").force_new(),
    a("protection", Ty::Bool, Some("false"), "container/container.go:1026-1033"),
    a("hook_script_file_id", Ty::Str, Some(""), "container/container.go:519-524"),
    a("timeout_create", Ty::Int, Some("1800"), "container/container.go:1097-1102"),
    a("timeout_clone", Ty::Int, Some("1800"), "container/container.go:1103-1108"),
    a("timeout_update", Ty::Int, Some("1800"), "container/container.go:1109-1114"),
    a("timeout_delete", Ty::Int, Some("60"), "container/container.go:1115-1120"),
    a("timeout_start", Ty::Int, Some("300"), "container/container.go:1121-1128"),
    a("clone", Ty::Block, None, "container/container.go:226-275"),
    a("clone.vm_id", Ty::Int, None, "container/container.go:264-270").force_new(),
    a("clone.full", Ty::Bool, Some("true"), "container/container.go:249-263").force_new(),
    a("cpu", Ty::Block, None, "container/container.go:316-368"),
    a("cpu.cores", Ty::Int, Some("1"), "container/container.go:339-345"),
    a("cpu.architecture", Ty::Str, Some("amd64"), "container/container.go:332-338"),
    a("cpu.limit", Ty::Float, Some("0"), "container/container.go:346-354"),
    a("cpu.units", Ty::Int, None, "container/container.go:355-363").computed(),
    a("memory", Ty::Block, None, "container/container.go:709-745"),
    a("memory.dedicated", Ty::Int, Some("512"), "container/container.go:723-731"),
    a("memory.swap", Ty::Int, Some("0"), "container/container.go:732-740"),
    a("disk", Ty::Block, None, "container/container.go:384-454"),
    a("disk.datastore_id", Ty::Str, Some("local"), "container/container.go:408-414").force_new(),
    a("disk.size", Ty::Int, Some("4"), "container/container.go:427-433").replace(Replace::WhenShrinks),
    a("disk.acl", Ty::Bool, Some("false"), "container/container.go:402-407"),
    a("disk.quota", Ty::Bool, Some("false"), "container/container.go:415-420"),
    a("disk.replicate", Ty::Bool, Some("false"), "container/container.go:421-426"),
    a("mount_point", Ty::Block, None, "container/container.go:746-838").force_new(),
    a("mount_point.volume", Ty::Str, None, "container/container.go:813-828").force_new().compare(Compare::Volume),
    a("mount_point.path", Ty::Str, None, "container/container.go:773-780").compare(Compare::LeadingSlash),
    a("mount_point.size", Ty::Str, Some(""), "container/container.go:805-812").force_new(),
    a("mount_point.acl", Ty::Bool, Some("false"), "container/container.go:753-758"),
    a("mount_point.backup", Ty::Bool, Some("false"), "container/container.go:759-764"),
    a("mount_point.quota", Ty::Bool, Some("false"), "container/container.go:781-786"),
    a("mount_point.read_only", Ty::Bool, Some("false"), "container/container.go:787-792"),
    a("mount_point.replicate", Ty::Bool, Some("true"), "container/container.go:793-798"),
    a("mount_point.shared", Ty::Bool, Some("false"), "container/container.go:799-804"),
    a("features", Ty::Block, None, "container/container.go:464-518"),
    a("features.nesting", Ty::Bool, Some("false"), "container/container.go:481-486"),
    a("features.keyctl", Ty::Bool, Some("false"), "container/container.go:487-492"),
    a("features.fuse", Ty::Bool, Some("false"), "container/container.go:493-498"),
    a("features.mknod", Ty::Bool, Some("false"), "container/container.go:508-513"),
    a("initialization", Ty::Block, None, "container/container.go:525-692"),
    a("initialization.hostname", Ty::Str, Some(""), "container/container.go:569-575"),
    a("initialization.dns", Ty::Block, None, "container/container.go:534-568").compare(Compare::SuppressEmptyBlock),
    a("initialization.dns.domain", Ty::Str, Some(""), "container/container.go:543-548"),
    a("initialization.dns.servers", Ty::List, None, "container/container.go:557-563"),
    a("initialization.ip_config", Ty::Block, None, "container/container.go:576-641"),
    a("initialization.ip_config.ipv4", Ty::Block, None, "container/container.go:585"),
    a("initialization.ip_config.ipv4.address", Ty::Str, Some(""), "container/container.go:594-599"),
    a("initialization.ip_config.ipv4.gateway", Ty::Str, Some(""), "container/container.go:600-605"),
    a("initialization.ip_config.ipv6", Ty::Block, None, "container/container.go:611"),
    a("initialization.ip_config.ipv6.address", Ty::Str, Some(""), "container/container.go:620-625"),
    a("initialization.ip_config.ipv6.gateway", Ty::Str, Some(""), "container/container.go:626-631"),
    a("initialization.user_account", Ty::Block, None, "container/container.go:642-678").force_new(),
    a("initialization.user_account.keys", Ty::List, None, "container/container.go:652-661").force_new(),
    a("initialization.entrypoint", Ty::Str, Some(""), "container/container.go:679-687"),
    a("network_interface", Ty::Block, None, "container/container.go:916-986"),
    a("network_interface.name", Ty::Str, None, "container/container.go:959-963"),
    a("network_interface.bridge", Ty::Str, Some("vmbr0"), "container/container.go:925-930"),
    a("network_interface.mac_address", Ty::Str, None, "container/container.go:949-958").computed().compare(Compare::SuppressEmptyConfig),
    a("network_interface.firewall", Ty::Bool, Some("false"), "container/container.go:937-942"),
    a("network_interface.vlan_id", Ty::Int, Some("0"), "container/container.go:970-975"),
    a("network_interface.enabled", Ty::Bool, Some("true"), "container/container.go:931-936"),
    a("network_interface.rate_limit", Ty::Float, Some("0"), "container/container.go:964-969"),
    a("network_interface.mtu", Ty::Int, Some("0"), "container/container.go:976-981"),
    a("network_interface.host_managed", Ty::Bool, Some("false"), "container/container.go:943-948"),
    a("operating_system", Ty::Block, None, "container/container.go:993-1018").force_new(),
    a("operating_system.template_file_id", Ty::Str, None, "container/container.go:1000-1006").force_new(),
    a("operating_system.type", Ty::Str, Some("unmanaged"), "container/container.go:1007-1013"),
    a("console", Ty::Block, None, "container/container.go:276-315"),
    a("console.enabled", Ty::Bool, Some("true"), "container/container.go:291-296"),
    a("console.type", Ty::Str, Some("tty"), "container/container.go:297-303"),
    a("console.tty_count", Ty::Int, Some("2"), "container/container.go:304-310"),
    a("startup", Ty::Block, None, "container/container.go:1043-1071"),
    a("startup.order", Ty::Int, Some("-1"), "container/container.go:1049-1054"),
    a("startup.up_delay", Ty::Int, Some("-1"), "container/container.go:1055-1060"),
    a("startup.down_delay", Ty::Int, Some("-1"), "container/container.go:1061-1066"),
];
