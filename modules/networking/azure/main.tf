# Private networking: a virtual network whose node subnet may not reach the internet, except the
# egress proxy's nodes (an application security group) to the allowlisted destinations on 443,
# through a NAT gateway that exists only when egress_cidrs is not empty; a subnet for private
# endpoints (Key Vault, storage, the workspace).
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

resource "azurerm_subnet" "endpoints" {
  name                 = "private-endpoints"
  resource_group_name  = var.resource_group_name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.cidr_block, 8, 255)]
}

resource "azurerm_application_security_group" "egress_proxy" {
  name                = "${var.name}-egress-proxy"
  location            = var.region
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_network_security_group" "nodes" {
  name                = "${var.name}-nodes"
  location            = var.region
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

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

resource "azurerm_public_ip" "nat" {
  count               = length(var.egress_cidrs) > 0 ? 1 : 0
  name                = "${var.name}-nat"
  location            = var.region
  resource_group_name = var.resource_group_name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = var.tags
}

resource "azurerm_nat_gateway" "this" {
  count               = length(var.egress_cidrs) > 0 ? 1 : 0
  name                = var.name
  location            = var.region
  resource_group_name = var.resource_group_name
  sku_name            = "Standard"
  tags                = var.tags
}

resource "azurerm_nat_gateway_public_ip_association" "this" {
  count                = length(var.egress_cidrs) > 0 ? 1 : 0
  nat_gateway_id       = azurerm_nat_gateway.this[0].id
  public_ip_address_id = azurerm_public_ip.nat[0].id
}

resource "azurerm_subnet_nat_gateway_association" "nodes" {
  count          = length(var.egress_cidrs) > 0 ? 1 : 0
  subnet_id      = azurerm_subnet.nodes.id
  nat_gateway_id = azurerm_nat_gateway.this[0].id
}
