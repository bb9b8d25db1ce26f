import { Template } from 'aws-cdk-lib/assertions';

/**
 * Turns a synthesized UserData value (Fn::Base64 around a string or an
 * Fn::Join of strings) into the script EC2 would run.
 *
 * @throws when the value contains an intrinsic whose value is known only at deploy time
 */
export function resolveUserData(value: unknown): string {
  if (typeof value === 'string') {
    return value;
  }
  if (typeof value === 'object' && value !== null) {
    const object = value as Record<string, unknown>;
    if ('Fn::Base64' in object) {
      return resolveUserData(object['Fn::Base64']);
    }
    if ('Fn::Join' in object) {
      const [separator, parts] = object['Fn::Join'] as [string, unknown[]];
      return parts.map(resolveUserData).join(separator);
    }
  }
  throw new Error(`cannot resolve ${JSON.stringify(value)} at synth time`);
}

/** Returns the resolved UserData of the only resource of `type` in the template. */
export function userDataOf(template: Template, type: 'AWS::EC2::Instance' | 'AWS::AutoScaling::LaunchConfiguration' | 'AWS::EC2::LaunchTemplate'): string {
  const resources = Object.values(template.findResources(type));
  if (resources.length !== 1) {
    throw new Error(`expected one ${type}, found ${resources.length}`);
  }
  const properties = resources[0].Properties;
  const raw = type === 'AWS::EC2::LaunchTemplate' ? properties.LaunchTemplateData.UserData : properties.UserData;
  return resolveUserData(raw);
}

/** Extracts the base64 lines of the embedded program from a lock block and decodes them. */
export function embeddedProgramBase64(script: string): string[] {
  const lines = script.split('\n');
  const start = lines.findIndex((line) => line.startsWith('base64 -d <<\'IP_LOCKDOWN_PROGRAM\''));
  if (start === -1) {
    throw new Error('no embedded program in the script');
  }
  const end = lines.indexOf('IP_LOCKDOWN_PROGRAM', start + 1);
  return lines.slice(start + 1, end);
}

/** Counts the embedded copies of the program in a script. */
export function countEmbeddedPrograms(script: string): number {
  return script.split('\n').filter((line) => line.startsWith('base64 -d <<\'IP_LOCKDOWN_PROGRAM\'')).length;
}
