#pragma once

// CreateComponentVersion's `lambdaFunction` (botocore's LambdaFunctionRecipeSource): there
// is no AWS Lambda on the device, so `lambdaArn` names a function package in a local
// directory, and the conversion writes a recipe (format 2020-01-25, ComponentType
// aws.greengrass.lambda) whose DefaultConfiguration is the function's definition exactly
// as function_runtime reads a group's `functions[].config` (runtime, handler, codeUri,
// codeSha256 and every componentLambdaParameters field under its own name).
//
// A package is `<packages_dir>/<function name>/<version>/` holding:
// - `configuration.json`: what `aws lambda get-function-configuration --function-name
//   NAME --qualifier VERSION` prints; `Runtime` (python3.x → python3; provided,
//   provided.al2 and Grove's `executable` → executable) and `Handler` are used, and
//   `Description` when there is one;
// - the code: `code.zip` (the deployment package; its SHA-256 goes into codeSha256, so
//   function_runtime refuses a package changed afterwards) or a directory `code/`.

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "recipe.hpp"

namespace grove::deployment {

/// Where and for whom lambdaFunction conversions run.
struct lambda_settings {
  /// The packages' directory.
  std::filesystem::path packages_dir;
  /// This core's region: a lambdaArn of another is refused.
  std::string region;
  /// This core's account: a lambdaArn of another is refused.
  std::string account_id;
};

/// A converted lambdaFunction.
struct lambda_recipe {
  /// The recipe (JSON text), for parse_recipe like an inlineRecipe.
  std::string recipe;
  /// DescribeComponent's `platforms` (componentPlatforms with their names), or null to
  /// keep parse_recipe's.
  nlohmann::json platforms;
};

/// Converts `source` (the request's lambdaFunction object). On failure `errors` holds
/// every problem, each `field` a JSON pointer under `lambdaFunction` (e.g.
/// `lambdaFunction/componentLambdaParameters/maxQueueSize`).
std::optional<lambda_recipe> convert_lambda(const nlohmann::json& source,
                                            const lambda_settings& settings,
                                            std::vector<recipe_error>& errors);

/// Reads function package `name` version `version` of `packages_dir` (the layout above,
/// shared by lambdaFunction and v1 deployments' functions) into `function`: `runtime`,
/// `handler`, `codeUri` and, for a code.zip, `codeSha256`. Returns the problems found.
std::vector<std::string> read_lambda_package(const std::filesystem::path& packages_dir,
                                             const std::string& name,
                                             const std::string& version,
                                             nlohmann::json& function);

} // namespace grove::deployment
