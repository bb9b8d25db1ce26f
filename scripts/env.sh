# shellcheck shell=sh
# Sourced by the scripts in this folder. Keeps every tool away from the network
# and from any instance metadata service: the tests need neither.
export AWS_EC2_METADATA_DISABLED=true
export CDK_DISABLE_CLI_TELEMETRY=true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
export CDK_DISABLE_VERSION_CHECK=true
