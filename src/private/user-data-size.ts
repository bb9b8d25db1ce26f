import { Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { IConstruct } from 'constructs';
import { lockBlockBytes } from './user-data-locks';

/** EC2 limit on user data, counted before base64 encoding. */
export const USER_DATA_MAX_BYTES = 16_384;

const validatedTargets = new WeakSet<IConstruct>();

/**
 * Adds a check, once per target, that fails synthesis when the target's
 * rendered user data is larger than EC2 accepts.
 */
export function addUserDataSizeValidation(target: IConstruct, description: string, userData: ec2.UserData): void {
  if (validatedTargets.has(target)) {
    return;
  }
  validatedTargets.add(target);

  target.node.addValidation({
    validate: () => {
      const bytes = measureUserData(target, userData);
      if (bytes <= USER_DATA_MAX_BYTES) {
        return [];
      }
      return [
        `The user data of ${description} is ${bytes} bytes (the IpLockdown block takes ${lockBlockBytes(userData)} of them), `
        + `more than the ${USER_DATA_MAX_BYTES} bytes EC2 accepts. `
        + 'Shorten your own user data (for example, download a script from an S3 asset instead of inlining it), '
        + 'or put /usr/local/sbin/ip-lockdown in the machine image and set embedProgram: false, which shrinks the block to under 1 KB.',
      ];
    },
  });
}

/**
 * Returns the size in bytes of the rendered user data.
 *
 * NOTE: values known only at deploy time (Ref, Fn::GetAtt, imported values)
 * cannot be measured at synth time and count as zero bytes, so the result is a
 * lower bound when the user data contains them.
 */
export function measureUserData(scope: IConstruct, userData: ec2.UserData): number {
  return countLiteralBytes(Stack.of(scope).resolve(userData.render()));
}

function countLiteralBytes(value: unknown): number {
  if (typeof value === 'string') {
    return Buffer.byteLength(value, 'utf8');
  }
  if (typeof value !== 'object' || value === null) {
    return 0;
  }

  const join = (value as Record<string, unknown>)['Fn::Join'];
  if (Array.isArray(join) && join.length === 2 && typeof join[0] === 'string' && Array.isArray(join[1])) {
    const [separator, parts] = join as [string, unknown[]];
    const separators = Math.max(0, parts.length - 1) * Buffer.byteLength(separator, 'utf8');
    return parts.reduce<number>((total, part) => total + countLiteralBytes(part), separators);
  }

  // MultipartUserData embeds each part base64-encoded.
  const base64 = (value as Record<string, unknown>)['Fn::Base64'];
  if (base64 !== undefined) {
    return 4 * Math.ceil(countLiteralBytes(base64) / 3);
  }

  return 0;
}
