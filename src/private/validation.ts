import * as net from 'net';
import { Token } from 'aws-cdk-lib';

/** Addresses of the EC2 instance metadata service (IMDS). */
export const METADATA_ADDRESSES = ['169.254.169.254', 'fd00:ec2::254'];

const METADATA_V4 = ipv4ToNumber('169.254.169.254');
const METADATA_V6 = canonicalIpv6('fd00:ec2::254');
const IPV6_LOOPBACK = canonicalIpv6('::1');

// Same forms the on-instance program accepts: shadow-utils' default name rule
// (NAME_REGEX in useradd) capped at 32 characters, or a numeric id.
const ACCOUNT_NAME = /^[a-z_][a-z0-9_.-]*[$]?$/;
const ACCOUNT_NAME_MAX_LENGTH = 32;
const NUMERIC_ID = /^(0|[1-9][0-9]*)$/;
// The largest valid uid and gid: (uid_t)-1 is reserved as "no id".
const MAX_NUMERIC_ID = 4294967294;

const LOCK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

// Linux interface names are at most 15 bytes (IFNAMSIZ minus the NUL). An
// iptables pattern may end in `+` to match every name with that prefix, and a
// lone `+` matches every interface.
const INTERFACE_PATTERN = /^([A-Za-z0-9][A-Za-z0-9_.-]*)?\+?$/;
const INTERFACE_PATTERN_MAX_LENGTH = 15;

/** A validated destination: the text for the lock file, and a key that is equal for equal addresses. */
export interface Destination {
  /** The text written to the lock file, as the user gave it. */
  readonly text: string;
  /** Canonical form, for finding duplicates written differently. */
  readonly key: string;
  /** Whether the destination is or contains an IMDS address. */
  readonly coversMetadata: boolean;
}

/**
 * Parses and validates one destination: an IPv4 address, an IPv4 CIDR block
 * with prefix 1 to 32 and no host bits set, or an IPv6 address.
 *
 * @throws when the value is a token, a hostname, an IPv6 CIDR block or malformed
 */
export function parseDestination(value: string, prop: string): Destination {
  if (Token.isUnresolved(value)) {
    throw new Error(`${prop}: an unresolved token is not supported, because the address is written into a shell script at synth time. Use a literal address.`);
  }

  const slash = value.indexOf('/');
  const address = slash === -1 ? value : value.slice(0, slash);
  const prefixText = slash === -1 ? undefined : value.slice(slash + 1);

  if (net.isIPv4(address)) {
    if (prefixText === undefined) {
      const key = `4:${address}/32`;
      return { text: value, key, coversMetadata: ipv4ToNumber(address) === METADATA_V4 };
    }
    if (!/^([1-9]|[12][0-9]|3[0-2])$/.test(prefixText)) {
      throw new Error(`${prop}: invalid IPv4 CIDR block '${value}'. The prefix must be 1 to 32 (/0 would lock every IPv4 address).`);
    }
    const prefix = Number(prefixText);
    const blockSize = 2 ** (32 - prefix);
    const network = ipv4ToNumber(address);
    const hostBits = network % blockSize;
    if (hostBits !== 0) {
      throw new Error(`${prop}: the IPv4 CIDR block '${value}' has host bits set. Write it as '${numberToIpv4(network - hostBits)}/${prefix}'.`);
    }
    const coversMetadata = METADATA_V4 - (METADATA_V4 % blockSize) === network;
    return { text: value, key: `4:${address}/${prefix}`, coversMetadata };
  }

  if (net.isIPv6(address) && !address.includes('%') && !address.includes('.')) {
    if (prefixText !== undefined) {
      throw new Error(`${prop}: IPv6 CIDR blocks such as '${value}' are not supported. List the IPv6 addresses one by one.`);
    }
    const canonical = canonicalIpv6(address);
    if (/^(0000:){5}(0000|ffff):/.test(canonical) && canonical !== IPV6_LOOPBACK) {
      throw new Error(`${prop}: '${value}' is the unspecified address or an IPv4-mapped or IPv4-compatible IPv6 address, which is not supported. Lock the IPv4 address instead.`);
    }
    return { text: value, key: `6:${canonical}`, coversMetadata: canonical === METADATA_V6 };
  }

  throw new Error(`${prop}: '${value}' is not an IPv4 address, an IPv4 CIDR block (such as 10.0.0.0/8) or an IPv6 address. Hostnames, zone ids and IPv4-embedded IPv6 notation are not supported.`);
}

/**
 * Validates a list of user or group names (or numeric ids).
 *
 * @throws when the list is a token, or an entry is a token, malformed or repeated
 */
export function validateAccounts(values: string[], prop: string): string[] {
  if (Token.isUnresolved(values)) {
    throw new Error(`${prop}: an unresolved token list is not supported, because the names are written into a shell script at synth time. List literal names.`);
  }

  const seen = new Set<string>();
  for (const value of values) {
    if (Token.isUnresolved(value)) {
      throw new Error(`${prop}: an unresolved token is not supported, because the name is written into a shell script at synth time. Use a literal name or numeric id.`);
    }
    if (!isAccount(value)) {
      throw new Error(`${prop}: invalid name '${value}'. Use a name matching [a-z_][a-z0-9_.-]*[$]? of at most ${ACCOUNT_NAME_MAX_LENGTH} characters, or a numeric id from 0 to ${MAX_NUMERIC_ID}.`);
    }
    if (seen.has(value)) {
      throw new Error(`${prop}: '${value}' is listed more than once.`);
    }
    seen.add(value);
  }
  return [...values];
}

function isAccount(value: string): boolean {
  if (NUMERIC_ID.test(value)) {
    return Number(value) <= MAX_NUMERIC_ID;
  }
  return value.length <= ACCOUNT_NAME_MAX_LENGTH && ACCOUNT_NAME.test(value);
}

/**
 * Validates the destination list: not a token, not empty, no duplicates.
 */
export function parseDestinations(values: string[], prop: string): Destination[] {
  if (Token.isUnresolved(values)) {
    throw new Error(`${prop}: an unresolved token list is not supported, because the addresses are written into a shell script at synth time. List literal addresses.`);
  }
  if (values.length === 0) {
    throw new Error(`${prop}: the list is empty. List at least one address, or leave ${prop} unset to lock the instance metadata service addresses.`);
  }

  const seen = new Map<string, string>();
  const destinations: Destination[] = [];
  for (const value of values) {
    const destination = parseDestination(value, prop);
    const earlier = seen.get(destination.key);
    if (earlier !== undefined) {
      throw new Error(`${prop}: '${value}' repeats '${earlier}'. List each address once.`);
    }
    seen.set(destination.key, value);
    destinations.push(destination);
  }
  return destinations;
}

/**
 * Validates a lock name: it names the lock's file on the instance and its tag.
 */
export function validateLockName(value: string, prop: string): string {
  if (Token.isUnresolved(value)) {
    throw new Error(`${prop}: an unresolved token is not supported, because the name is written into a shell script at synth time. Use a literal name.`);
  }
  if (!LOCK_NAME.test(value)) {
    throw new Error(`${prop}: invalid lock name '${value}'. Use 1 to 64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit.`);
  }
  return value;
}

/**
 * Validates iptables interface patterns for forwarded traffic (`docker0`, `br-+`).
 */
export function validateInterfacePatterns(values: string[], prop: string): string[] {
  if (Token.isUnresolved(values)) {
    throw new Error(`${prop}: an unresolved token list is not supported, because the patterns are written into a shell script at synth time. List literal interface names.`);
  }

  const seen = new Set<string>();
  for (const value of values) {
    if (Token.isUnresolved(value)) {
      throw new Error(`${prop}: an unresolved token is not supported, because the pattern is written into a shell script at synth time. Use a literal interface name.`);
    }
    if (value === '' || value.length > INTERFACE_PATTERN_MAX_LENGTH || !INTERFACE_PATTERN.test(value)) {
      throw new Error(`${prop}: invalid interface pattern '${value}'. Use an interface name of 1 to 15 characters from A-Z a-z 0-9 _ . - starting with a letter or digit, optionally ending in '+' to match a prefix (such as 'docker0' or 'br-+'), or '+' alone for every interface.`);
    }
    if (seen.has(value)) {
      throw new Error(`${prop}: '${value}' is listed more than once.`);
    }
    seen.add(value);
  }
  return [...values];
}

function ipv4ToNumber(address: string): number {
  return address.split('.').reduce((total, octet) => (total * 256) + Number(octet), 0);
}

function numberToIpv4(value: number): string {
  return [3, 2, 1, 0].map((octet) => Math.floor(value / (256 ** octet)) % 256).join('.');
}

/** Expands an IPv6 address (already checked by net.isIPv6, no dotted quad) to eight 4-digit groups. */
function canonicalIpv6(address: string): string {
  const [head, tail] = address.toLowerCase().split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const missing = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...new Array<string>(missing).fill('0'), ...tailGroups];
  return groups.map((group) => group.padStart(4, '0')).join(':');
}
