import { App, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as sns from 'aws-cdk-lib/aws-sns';
import { measureUserData } from '../../src/private/user-data-size';

describe('measureUserData', () => {
  test('counts the bytes of literal user data', () => {
    // GIVEN
    const stack = new Stack(new App(), 'Stack');
    const userData = ec2.UserData.forLinux();
    userData.addCommands('echo é');

    // WHEN / THEN
    expect(measureUserData(stack, userData)).toBe(Buffer.byteLength('#!/bin/bash\necho é'));
  });

  test('counts literal parts and skips deploy-time values', () => {
    // GIVEN
    const stack = new Stack(new App(), 'Stack');
    const topic = new sns.Topic(stack, 'Topic');
    const userData = ec2.UserData.forLinux();
    userData.addCommands(`echo ${topic.topicArn} done`);

    // WHEN / THEN
    expect(measureUserData(stack, userData)).toBe(Buffer.byteLength('#!/bin/bash\necho  done'));
  });

  test('counts a multipart part in its base64 size', () => {
    // GIVEN
    const stack = new Stack(new App(), 'Stack');
    const part = ec2.UserData.forLinux();
    part.addCommands('echo abc');
    const userData = new ec2.MultipartUserData({ partsSeparator: 'SEP' });
    userData.addUserDataPart(part, ec2.MultipartBody.SHELL_SCRIPT, true);

    // WHEN
    const bytes = measureUserData(stack, userData);

    // THEN
    const text = [
      'Content-Type: multipart/mixed; boundary="SEP"',
      'MIME-Version: 1.0',
      '',
      '--SEP',
      'Content-Type: text/x-shellscript; charset="utf-8"',
      'Content-Transfer-Encoding: base64',
      '',
      Buffer.from('#!/bin/bash\necho abc').toString('base64'),
      '--SEP--',
      '',
    ].join('\n');
    expect(bytes).toBe(Buffer.byteLength(text));
  });
});
