# Private networking: a virtual network whose node subnet may reach the internet only where the
# cluster needs it (Microsoft Entra ID, Azure Resource Manager, the Microsoft Container
# Registry, Azure Monitor: service tags, below) and the egress proxy's nodes (an application
# security group) the allowlisted destinations on 443, all through a NAT gateway; a subnet the
# API server is injected into (API server VNet integration, which KMS with a private key vault
# needs); and a subnet for private endpoints (Key Vault, storage, the Monitor private link
# scope), with the private DNS zones that resolve them inside the network.
resource "azurerm_virtual_network" "this" {
  name                = var.name
  location            = var.region
  resource_group_name = var.resource_group_name
  address_space       = [var.cidr_block]
  tags                = var.tags
}

resource "azurerm_subnet" "nodes" {
  name                 = "nodes"
  resource_group_name  = var.resource_group_name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.cidr_block, 4, 0)]
}

resource "azurerm_subnet" "apiserver" {
  name                 = "apiserver"
  resource_group_name  = var.resource_group_name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.cidr_block, 8, 254)]

  delegation {
    name = "aks-apiserver"
    service_delegation {
      name    = "Microsoft.ContainerService/managedClusters"
      actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
  }
}

resource "azurerm_subnet" "endpoints" {
  name                 = "private-endpoints"
  resource_group_name  = var.resource_group_name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.cidr_block, 8, 255)]
}

# The private DNS zones of the private endpoints the other modules put in the endpoints subnet.
resource "azurerm_private_dns_zone" "this" {
  for_each            = local.private_dns_zones
  name                = each.value
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "this" {
  for_each              = local.private_dns_zones
  name                  = "${var.name}-${each.key}"
  resource_group_name   = var.resource_group_name
  private_dns_zone_name = azurerm_private_dns_zone.this[each.key].name
  virtual_network_id    = azurerm_virtual_network.this.id
  registration_enabled  = false
  tags                  = var.tags
}

locals {
  private_dns_zones = {
    vault   = "privatelink.vaultcore.azure.net"
    blob    = "privatelink.blob.core.windows.net"
    monitor = "privatelink.monitor.azure.com"
    oms     = "privatelink.oms.opinsights.azure.com"
    ods     = "privatelink.ods.opinsights.azure.com"
    agent   = "privatelink.agentsvc.azure-automation.net"
  }

  # What the nodes reach outside the network, by service tag, on 443: sign-in and tokens
  # (Microsoft Entra ID: kubelet, workload identity), the Azure control plane (Resource
  # Manager: cloud provider, disk and network drivers), images (Microsoft Container Registry and
  # its data endpoints behind Azure Front Door) and monitoring (Azure Monitor).
  cluster_service_tags = {
    identity = { priority = 300, tag = "AzureActiveDirectory" }
    arm      = { priority = 310, tag = "AzureResourceManager" }
    registry = { priority = 320, tag = "MicrosoftContainerRegistry" }
    mcr-data = { priority = 330, tag = "AzureFrontDoor.FirstParty" }
    monitor  = { priority = 340, tag = "AzureMonitor" }
  }
}

resource "azurerm_application_security_group" "egress_proxy" {
  name                = "${var.name}-egress-proxy"
  location            = var.region
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

# The nodes' rule set: the internet denied (priority 4000) but the paths below.
resource "azurerm_network_security_group" "nodes" {
  name                = "${var.name}-nodes"
  location            = var.region
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

# Inside the network: the API server (injected into the apiserver subnet), the other nodes and
# pods, the private endpoints.
resource "azurerm_network_security_rule" "inside" {
  name                        = "vnet-out"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.nodes.name
  priority                    = 100
  direction                   = "Outbound"
  access                      = "Allow"
  protocol                    = "*"
  source_address_prefix       = "VirtualNetwork"
  source_port_range           = "*"
  destination_address_prefix  = "VirtualNetwork"
  destination_port_range      = "*"
}

# Azure's resolver, the platform address 168.63.129.16.
resource "azurerm_network_security_rule" "dns" {
  name                        = "azure-dns-out"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.nodes.name
  priority                    = 110
  direction                   = "Outbound"
  access                      = "Allow"
  protocol                    = "*"
  source_address_prefix       = "*"
  source_port_range           = "*"
  destination_address_prefix  = "168.63.129.16"
  destination_port_range      = "53"
}

resource "azurerm_network_security_rule" "cluster" {
  for_each                    = local.cluster_service_tags
  name                        = "${each.key}-out"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.nodes.name
  priority                    = each.value.priority
  direction                   = "Outbound"
  access                      = "Allow"
  protocol                    = "Tcp"
  source_address_prefix       = "*"
  source_port_range           = "*"
  destination_address_prefix  = each.value.tag
  destination_port_range      = "443"
}

# Agents reach the egress proxy (the gateway's pods, on the nodes of its security group).
resource "azurerm_network_security_rule" "to_egress_proxy" {
  name                                       = "egress-proxy-in"
  resource_group_name                        = var.resource_group_name
  network_security_group_name                = azurerm_network_security_group.nodes.name
  priority                                   = 120
  direction                                  = "Inbound"
  access                                     = "Allow"
  protocol                                   = "Tcp"
  source_address_prefix                      = "VirtualNetwork"
  source_port_range                          = "*"
  destination_application_security_group_ids = [azurerm_application_security_group.egress_proxy.id]
  destination_port_range                     = tostring(var.egress_proxy_port)
}

resource "azurerm_network_security_rule" "allowlist" {
  count                                 = length(var.egress_cidrs) > 0 ? 1 : 0
  name                                  = "egress-proxy-allowlist"
  resource_group_name                   = var.resource_group_name
  network_security_group_name           = azurerm_network_security_group.nodes.name
  priority                              = 200
  direction                             = "Outbound"
  access                                = "Allow"
  protocol                              = "Tcp"
  source_application_security_group_ids = [azurerm_application_security_group.egress_proxy.id]
  source_port_range                     = "*"
  destination_address_prefixes          = var.egress_cidrs
  destination_port_range                = "443"
}

resource "azurerm_network_security_rule" "deny_internet" {
  name                        = "internet-out-denied"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.nodes.name
  priority                    = 4000
  direction                   = "Outbound"
  access                      = "Deny"
  protocol                    = "*"
  source_address_prefix       = "*"
  source_port_range           = "*"
  destination_address_prefix  = "Internet"
  destination_port_range      = "*"
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  subnet_id                 = azurerm_subnet.nodes.id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

# The nodes' way out (AKS outbound type userAssignedNATGateway): the security group above
# decides what may use it.
resource "azurerm_public_ip" "nat" {
  name                = "${var.name}-nat"
  location            = var.region
  resource_group_name = var.resource_group_name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = var.tags
}

resource "azurerm_nat_gateway" "this" {
  name                = var.name
  location            = var.region
  resource_group_name = var.resource_group_name
  sku_name            = "Standard"
  tags                = var.tags
}

resource "azurerm_nat_gateway_public_ip_association" "this" {
  nat_gateway_id       = azurerm_nat_gateway.this.id
  public_ip_address_id = azurerm_public_ip.nat.id
}

resource "azurerm_subnet_nat_gateway_association" "nodes" {
  subnet_id      = azurerm_subnet.nodes.id
  nat_gateway_id = azurerm_nat_gateway.this.id
}
