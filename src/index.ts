export * from './ip-lockdown';
export * from './reapply-schedule';
