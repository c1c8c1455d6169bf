#pragma once

// The operation names of Greengrass v1's group API (v1_api.hpp), for the credentials'
// allow-lists (config.hpp) without the API's headers.

#include <string>
#include <string_view>

namespace grove::deployment {

/// Whether `op` names an operation of the v1 group API (CreateGroup, ListCoreDefinitions,
/// GetDeviceDefinitionVersion, ...).
inline bool is_v1_operation(std::string_view op) {
  for (std::string_view group_op :
       {"CreateGroup", "ListGroups", "GetGroup", "UpdateGroup", "DeleteGroup",
        "CreateGroupVersion", "ListGroupVersions", "GetGroupVersion", "CreateDeployment",
        "ListDeployments", "GetDeploymentStatus", "ResetDeployments",
        "CreateGroupCertificateAuthority", "GetGroupCertificateAuthority",
        "ListGroupCertificateAuthorities", "GetGroupCertificateConfiguration",
        "UpdateGroupCertificateConfiguration", "AssociateRoleToGroup",
        "GetAssociatedRole", "DisassociateRoleFromGroup", "AssociateServiceRoleToAccount",
        "GetServiceRoleForAccount", "DisassociateServiceRoleFromAccount", "StartBulkDeployment",
        "GetBulkDeploymentStatus", "ListBulkDeployments", "ListBulkDeploymentDetailedReports",
        "StopBulkDeployment"})
    if (op == group_op)
      return true;
  for (std::string_view kind : {"Core", "Device", "Function", "Subscription", "Resource", "Logger"}) {
    std::string k{kind};
    for (const auto& name :
         {"Create" + k + "Definition", "List" + k + "Definitions", "Get" + k + "Definition",
          "Update" + k + "Definition", "Delete" + k + "Definition",
          "Create" + k + "DefinitionVersion", "List" + k + "DefinitionVersions",
          "Get" + k + "DefinitionVersion"})
      if (op == name)
        return true;
  }
  return false;
}

} // namespace grove::deployment
